"""The folders are floors: a module imports only its own floor and the floors below it.

Read from the source with `ast` (nothing is imported), so a violation names the file and
the line. Imports inside functions count for the floors (they are still a dependency) but
not for cycles, which only module-level imports can cause at import time.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_DIRS = {  # as pyproject.toml's package-dir maps them
    "fleetwire.proto": "proto",
    "fleetwire.server": "server",
    "fleetwire.sim": "sim",
    "fleetwire.operator": "operator",
    "fleetwire": "fleetwire",
}
GROUND = ("fleetwire.pki", "fleetwire.trust", "fleetwire.strictjson", "fleetwire.image")
"""Shared helpers every floor may use (and `fleetwire` itself, which holds only `__version__`)."""

FLOORS: dict[str, tuple[str, ...]] = {
    # a floor: the import prefixes it may use besides its own
    "fleetwire.proto": (),
    "fleetwire.pki": ("fleetwire.proto",),
    "fleetwire.trust": (),
    "fleetwire.strictjson": (),
    "fleetwire.image": (),
    "fleetwire.sim": ("fleetwire.proto", *GROUND),
    "fleetwire.server": ("fleetwire.proto", *GROUND),
    "fleetwire.operator": ("fleetwire.proto", "fleetwire.server", *GROUND),
}
OPERATOR_FLOORS = (
    # lowest first: each may import the ones before it, never one after it
    ("environment",),
    ("clients",),
    ("resource",),
    ("policies",),
    ("stores",),
    ("reconcilers",),
    ("handlers", "commands"),
    ("main",),
)
GENERATED = ("_pb2.py", "/proto/envelope/")


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    for package, folder in sorted(PACKAGE_DIRS.items(), key=lambda kv: -len(kv[1])):
        if rel.parts[0] == folder:
            parts = [package, *rel.parts[1:]]
            if parts[-1] == "__init__":
                parts.pop()
            return ".".join(parts)
    raise ValueError(path)


def sources() -> Iterator[Path]:
    for folder in set(PACKAGE_DIRS.values()):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if not any(g in str(path) for g in GENERATED):
                yield path


def imports(path: Path) -> Iterator[tuple[str, int, bool]]:
    """(imported module, line, at module level) for every import of ours in `path`."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    top = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        at_top = id(node) in top  # not under a function or `if TYPE_CHECKING:`
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("fleetwire"):
                    yield alias.name, node.lineno, at_top
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if name.startswith("fleetwire"):
                for alias in node.names:
                    yield (f"{name}.{alias.name}" if _is_module(f"{name}.{alias.name}") else name), node.lineno, at_top


def _is_module(name: str) -> bool:
    for package, folder in PACKAGE_DIRS.items():
        if name == package or name.startswith(package + "."):
            rest = name[len(package):].lstrip(".").replace(".", "/")
            base = ROOT / folder / rest if rest else ROOT / folder
            if base.with_suffix(".py").is_file() or (base / "__init__.py").is_file():
                return True
    return False


def floor_of(module: str) -> str:
    for floor in sorted(FLOORS, key=len, reverse=True):
        if module == floor or module.startswith(floor + "."):
            return floor
    return module  # the top floor (cli, demo): anything goes


def _operator_rank(module: str) -> int | None:
    parts = module.split(".")
    if parts[:2] != ["fleetwire", "operator"] or len(parts) < 3:
        return None
    for rank, names in enumerate(OPERATOR_FLOORS):
        if parts[2] in names:
            return rank
    raise AssertionError(f"{module}: an operator module outside the declared floors {OPERATOR_FLOORS}")


ALL = {module_name(p): p for p in sources()}


def test_every_floor_imports_only_floors_below_it() -> None:
    wrong = []
    for module, path in ALL.items():
        floor = floor_of(module)
        if floor not in FLOORS:
            continue
        allowed = (floor, *FLOORS[floor])
        for name, line, _ in imports(path):
            if name != "fleetwire" and not any(name == a or name.startswith(a + ".") for a in allowed):
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert not wrong, "\n".join(wrong)


def test_operator_floors_point_down() -> None:
    wrong = []
    for module, path in ALL.items():
        rank = _operator_rank(module)
        if rank is None:
            continue
        for name, line, _ in imports(path):
            other = _operator_rank(name)
            if other is not None and other > rank:
                wrong.append(f"{path.relative_to(ROOT)}:{line} ({OPERATOR_FLOORS[rank][0]}) imports {name} "
                             f"({OPERATOR_FLOORS[other][0]})")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycle() -> None:
    graph = {m: {n for n, _, top in imports(p) if top and n in ALL and n != m} for m, p in ALL.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            pytest.fail("import cycle: " + " -> ".join(cycle))


HAND_WRITTEN = sorted({*ALL.values(), *(p for folder in ("tests", "bench", "infra", "scripts")
                                          for p in (ROOT / folder).rglob("*.py"))})


@pytest.mark.parametrize("path", HAND_WRITTEN, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_room_over_500_lines(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= 500, f"{path.relative_to(ROOT)} has {lines} lines: split it by concern"
