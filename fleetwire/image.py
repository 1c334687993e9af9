"""The container image fleetwire publishes, named in one place.

The Helm chart's default (`values.yaml` repository + `Chart.yaml` appVersion) and the
operator's builder of server Deployments both point at this reference, so an operator
never starts a server from another release than its own. The chart test checks that
the chart agrees with this module.
"""

from __future__ import annotations

from fleetwire import __version__

__all__ = ["IMAGE_REPOSITORY", "image_reference"]

IMAGE_REPOSITORY = "ghcr.io/fleetwire/fleetwire"
"""Where release images are pushed; tags are the package version without a leading `v`."""


def image_reference(version: str = __version__) -> str:
    """`repository:tag` of the image that carries fleetwire `version` (default: this one)."""
    return f"{IMAGE_REPOSITORY}:{version}"
