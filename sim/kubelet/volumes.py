"""Secret, ConfigMap and projected volumes: their files as the kubelet lays them out (`..data` a
symlink to a timestamped directory, each key a symlink through it), swapped in place on change."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fleetwire.sim.kubelet.model import Waiting, _decoded


def volume_files(volume: Mapping[str, Any], secrets_: Mapping[str, Mapping[str, Any]],
                 config_maps: Mapping[str, Mapping[str, Any]]) -> Mapping[str, tuple[bytes, int]] | Waiting | None:
    """The files of a Secret or ConfigMap volume (None: an emptyDir), or why it cannot be mounted."""
    if "emptyDir" in volume:
        return None
    if "secret" in volume:
        source, kind, objects, name = volume["secret"], "secret", secrets_, volume["secret"].get("secretName", "")
    elif "configMap" in volume:
        source, kind, objects, name = volume["configMap"], "configmap", config_maps, volume["configMap"].get("name", "")
    else:
        other = next(iter(k for k in volume if k != "name"), "?")
        return Waiting("ContainerCreating", f"volume {volume.get('name')}: {other} volumes are not emulated")
    mode = int(source.get("defaultMode", 0o644))
    obj = objects.get(name)
    if obj is None:
        if source.get("optional"):
            return {}
        return Waiting("ContainerCreating", f'MountVolume.SetUp failed for volume "{volume.get("name")}" : '
                                            f'{kind} "{name}" not found')
    values = _decoded(obj)
    items = source.get("items")
    if not items:
        return {key: (value, mode) for key, value in values.items()}
    files: dict[str, tuple[bytes, int]] = {}
    for item in items:
        if item["key"] not in values:
            if source.get("optional"):
                continue
            return Waiting("ContainerCreating", f'MountVolume.SetUp failed for volume "{volume.get("name")}" : '
                                                f'configmap references non-existent config key: {item["key"]}')
        files[item["path"]] = (values[item["key"]], int(item.get("mode", mode)))
    return files


def _entries(directory: str) -> list[tuple[str, str | None]]:
    found = []
    for entry in sorted(os.scandir(directory), key=lambda e: e.name):
        found.append((entry.name, os.readlink(entry.path) if entry.is_symlink() else None))
    return found


def write_volume(directory: Path, files: Mapping[str, tuple[bytes, int]]) -> bool:
    """Write a Secret or ConfigMap volume as the kubelet's atomic writer does; False if unchanged.

    The files go to a fresh `..TIMESTAMP` directory; `..data` is swapped to it with one
    rename (a reader sees the old set or the new, never a mix); each key is a symlink
    `KEY -> ..data/KEY`; the previous directory is removed afterwards.
    """
    data = directory / "..data"
    if data.is_symlink():
        current = directory / os.readlink(data)
        if _same_files(current, files):
            return False
    else:
        current = None
    stamp = dt.datetime.now(dt.UTC).strftime("..%Y_%m_%d_%H_%M_%S.") + f"{time.time_ns() % 10**9:09d}"
    fresh = directory / stamp
    fresh.mkdir(parents=True)
    for path, (content, mode) in files.items():
        target = fresh / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        target.chmod(mode)
    fresh.chmod(0o755)
    tmp = directory / "..data_tmp"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    tmp.symlink_to(stamp)
    os.replace(tmp, data)
    tops = {path.split("/", 1)[0] for path in files}
    for top in tops:
        link = directory / top
        if not link.is_symlink():
            link.symlink_to(f"..data/{top}")
    for entry in directory.iterdir():
        if entry.is_symlink() and not entry.name.startswith("..") and entry.name not in tops:
            entry.unlink()
    if current is not None:
        shutil.rmtree(current, ignore_errors=True)
    return True


def _same_files(directory: Path, files: Mapping[str, tuple[bytes, int]]) -> bool:
    try:
        present = {str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file()}
        return present == set(files) and all(
            (directory / path).read_bytes() == content and (directory / path).stat().st_mode & 0o7777 == mode
            for path, (content, mode) in files.items())
    except OSError:
        return False
