"""The Dockerfile, read as text (no Docker engine here): what it installs and how it runs.

The image must install the project the way a user does (pip, from the project's own
build), carry every package folder the wheel maps, start the `fleetwire` console command
that pyproject declares, and run as a numeric non-root user.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import pytest

from fleetwire import cli
from fleetwire.image import IMAGE_REPOSITORY

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, each with its (KEYWORD, arguments) in order."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        rest = rest.strip()
        if keyword == "FROM":
            parts = rest.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), parts[0])
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(base, name))
        elif keyword == "ARG" and not stages:
            key, _, default = rest.partition("=")
            args[key] = default
        elif stages:
            stages[-1].instructions.append((keyword, rest))
    return args, stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile((ROOT / "Dockerfile").read_text())[1]


def copy_sources(args: str) -> list[str]:
    """The source paths of a COPY (flags such as --from= dropped, the destination last)."""
    words = [w for w in shlex.split(args) if not w.startswith("--")]
    return words[:-1]


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list), "use the exec (JSON) form, so signals reach the process"
    return value


def test_multi_stage_on_python_slim(stages: list[Stage]) -> None:
    assert len(stages) >= 2
    for stage in stages:
        assert stage.base == "python:3.11-slim"
    assert PYPROJECT["project"]["requires-python"] == ">=3.11"


def test_build_stage_builds_the_project(stages: list[Stage]) -> None:
    build = stages[0]
    copied = {source.rstrip("/") for args in build.all("COPY") for source in copy_sources(args)}
    package_dirs = {path.split("/")[0] for path in PYPROJECT["tool"]["setuptools"]["package-dir"].values()}
    assert package_dirs <= copied, f"the wheel maps {sorted(package_dirs - copied)} but they are not copied"
    assert {"pyproject.toml", PYPROJECT["project"]["readme"]} <= copied
    runs = " ".join(build.all("RUN"))
    assert re.search(r"\bpip wheel\b.*\s\.(\s|$)", runs), "the build stage must build the project's wheel"


def test_final_stage_pip_installs_the_project(stages: list[Stage]) -> None:
    final = stages[-1]
    runs = " ".join(final.all("RUN"))
    project = PYPROJECT["project"]["name"]
    assert re.search(rf"\bpip install\b.*--no-index.*\b{project}\b", runs), \
        "the final stage installs the project with pip, from the built wheels only"
    assert "from=" in runs or any("--from=" in args for args in final.all("COPY"))
    assert not final.all("ADD")


def test_runs_as_numeric_non_root(stages: list[Stage]) -> None:
    users = stages[-1].all("USER")
    assert users, "the final stage must set USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0, "a numeric uid lets Kubernetes check runAsNonRoot"
    assert not gid or (gid.isdigit() and int(gid) != 0)
    assert int(uid) == 65532  # the chart's runAsUser


def test_entrypoint_is_the_console_command(stages: list[Stage], monkeypatch: pytest.MonkeyPatch) -> None:
    final = stages[-1]
    (entrypoint,) = [exec_form(a) for a in final.all("ENTRYPOINT")][-1:]
    assert entrypoint == ["fleetwire"]
    assert PYPROJECT["project"]["scripts"]["fleetwire"] == "fleetwire.cli:main"
    command = exec_form(final.all("CMD")[-1])
    assert command == ["serve", "--config", "/etc/fleetwire/config.json"]
    seen: dict[str, Any] = {}
    monkeypatch.setattr(cli, "_serve", lambda args: seen.update(config=args.config) or 0)
    assert cli.main(command) == 0
    assert str(seen["config"]) == "/etc/fleetwire/config.json"


def test_dockerignore_keeps_the_context_to_the_sources(stages: list[Stage]) -> None:
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]

    def ignored(path: str) -> bool:
        result = False
        for pattern in patterns:
            negate = pattern.startswith("!")
            body = pattern[1:] if negate else pattern
            body = body.rstrip("/")
            if fnmatch(path, body) or fnmatch(path, body.replace("**/", "")) or path.startswith(body + "/"):
                result = not negate
        return result

    for args in stages[0].all("COPY"):
        for source in copy_sources(args):
            assert not ignored(source.rstrip("/")), f"{source} is copied but excluded by .dockerignore"
    for heavy in (".venv", ".git", "tests", "bench", "infra", "charts", ".pytest_cache"):
        assert ignored(heavy), f"{heavy} should stay out of the build context"


def test_readme_builds_the_image_the_chart_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    assert re.search(rf"docker build -t {re.escape(IMAGE_REPOSITORY)}:", readme)
