"""Entry point Pulumi runs (`main: infra/` in Pulumi.yaml)."""

import sys
from pathlib import Path

# Pulumi runs this folder as a script, so only infra/ itself is on sys.path; the project
# root makes `infra` importable as the package the components and tests use.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from infra.program import export_outputs  # noqa: E402

export_outputs()
