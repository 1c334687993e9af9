"""The sandbox: bubblewrap's arguments for a pod's view of the filesystem (read-only root, volumes
bound at their mount paths, tmpfs over missing parents, its own network namespace)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from fleetwire.sim.kubelet.model import PodPlan
from fleetwire.sim.kubelet.volumes import _entries

SOCKET_DIR = "/run/pod"
"""Where the pod sandbox's port sockets live inside the sandbox."""


def _ancestor(path: str, exists: Callable[[str], bool]) -> str:
    current = os.path.dirname(path.rstrip("/")) or "/"
    while not exists(current):
        current = os.path.dirname(current) or "/"
    return current


def image_paths() -> tuple[str, ...]:
    """What stands for the container image here: this interpreter's venv and installation,
    and the project's source (an editable install)."""
    project = Path(__file__).resolve().parents[2]  # sim/kubelet/sandbox.py → the checkout
    return tuple(dict.fromkeys((sys.prefix, sys.base_prefix, str(project))))


def sandbox_args(plan: PodPlan, volume_dirs: Mapping[str, Path], socket_dir: Path, hostname: str, *,
                 exists: Callable[[str], bool] = os.path.isdir,
                 entries: Callable[[str], list[tuple[str, str | None]]] | None = None,
                 image: Sequence[str] | None = None) -> list[str]:
    """bwrap's arguments: user, pid and network namespaces; `/` read-only; each volume at its
    mountPath (a missing parent gets a tmpfs over its nearest existing ancestor, with that
    ancestor's entries bound back); the image's paths a mount would hide, bound back; the
    sockets directory; the environment; the workdir."""
    entries = entries or _entries
    image = image_paths() if image is None else image
    args = ["--unshare-user", "--uid", str(plan.uid), "--gid", str(plan.gid), "--unshare-pid", "--unshare-net",
            "--unshare-ipc", "--unshare-uts", "--hostname", hostname, "--die-with-parent", "--new-session",
            "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/run"]
    covered: list[str] = []
    mounts = sorted(plan.mounts, key=lambda m: m.path.count("/"))
    for mount in mounts:
        if exists(mount.path) or any(mount.path.startswith(c.rstrip("/") + "/") for c in covered):
            continue
        ancestor = _ancestor(mount.path, exists)
        if ancestor == "/" or any(ancestor.startswith(c.rstrip("/") + "/") or ancestor == c for c in covered):
            continue
        covered.append(ancestor)
        args += ["--tmpfs", ancestor]
        for name, link in entries(ancestor):
            path = f"{ancestor.rstrip('/')}/{name}"
            args += ["--symlink", link, path] if link is not None else ["--ro-bind", path, path]
    for mount in mounts:
        writable = plan.volumes.get(mount.volume) is None and not mount.read_only  # emptyDir
        args += ["--bind" if writable else "--ro-bind", str(volume_dirs[mount.volume]), mount.path]
    for path in image:  # a container's image is never hidden by its own volumes
        if any(path == m.path or path.startswith(m.path.rstrip("/") + "/") for m in mounts):
            args += ["--ro-bind", path, path]
    args += ["--bind", str(socket_dir), SOCKET_DIR]
    for ancestor in covered:
        args += ["--remount-ro", ancestor]  # a read-only root stays read-only under the tmpfs
    args += ["--clearenv", *[a for key, value in plan.env for a in ("--setenv", key, value)], "--chdir", plan.workdir]
    return args
