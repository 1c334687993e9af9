# syntax=docker/dockerfile:1
# One image for the server and the operator:
#   docker run IMAGE                                   -> fleetwire serve --config /etc/fleetwire/config.json
#   docker run IMAGE operator --all-namespaces         -> the Kubernetes operator (as the Helm chart runs it)
# Build: docker build -t ghcr.io/fleetwire/fleetwire:$(python -c 'import fleetwire; print(fleetwire.__version__)') .
ARG PYTHON_IMAGE=python:3.11-slim

# Stage 1: build the project's wheel and the wheels of its dependencies.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY fleetwire/ fleetwire/
COPY proto/ proto/
COPY server/ server/
COPY sim/ sim/
COPY operator/ operator/
RUN pip wheel --wheel-dir /wheels .

# Stage 2: install those wheels only; no compiler, no sources, no pip cache.
FROM ${PYTHON_IMAGE}
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HOME=/tmp
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels fleetwire
# Numeric non-root user: Kubernetes' runAsNonRoot can check a number, not a name.
USER 65532:65532
WORKDIR /tmp
EXPOSE 443 8080
ENTRYPOINT ["fleetwire"]
CMD ["serve", "--config", "/etc/fleetwire/config.json"]
