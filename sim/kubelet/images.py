"""Images: what the container runtime would read from the image's config (checked against the
Dockerfile by the tests), and what runs an image's executable on this machine."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from fleetwire.image import IMAGE_REPOSITORY


@dataclass(frozen=True)
class ImageConfig:
    """The parts of an image's config a container's process depends on."""

    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    workdir: str
    user: int
    group: int


IMAGES: Mapping[str, ImageConfig] = {
    IMAGE_REPOSITORY: ImageConfig(
        entrypoint=("fleetwire",), cmd=("serve", "--config", "/etc/fleetwire/config.json"),
        env=(("PIP_DISABLE_PIP_VERSION_CHECK", "1"), ("PIP_NO_CACHE_DIR", "1"), ("PYTHONDONTWRITEBYTECODE", "1"),
             ("PYTHONUNBUFFERED", "1"), ("HOME", "/tmp")),
        workdir="/tmp", user=65532, group=65532),
}
"""By repository (any tag): the Dockerfile's ENTRYPOINT, CMD, ENV, WORKDIR and USER."""

LOCAL_COMMANDS: Mapping[str, tuple[str, ...]] = {"fleetwire": (sys.executable, "-P", "-m", "fleetwire.cli")}
"""An image's executable and what runs it on this machine (the image installs the same package)."""

_LOCAL_PATH = f"{Path(sys.executable).parent}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def image_config(image: str) -> ImageConfig | None:
    repository = image.rsplit("@", 1)[0]
    if ":" in repository.rsplit("/", 1)[-1]:
        repository = repository.rsplit(":", 1)[0]
    return IMAGES.get(repository)
