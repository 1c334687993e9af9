"""`fleetwire serve --workers N|auto`, the pure parts: how many workers, how their metrics
merge, how a dead worker is restarted, what a worker's configuration is.

The processes themselves, on loopback with real vehicles: test_workers_e2e.py.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import Metric

from fleetwire.server.config import parse_config
from fleetwire.server.metrics import ServerMetrics
from fleetwire.server.metrics_merge import Retained, merge, per_worker, view
from fleetwire.server.supervisor import RESTART_MAX_SECONDS, restart_delay
from fleetwire.server.worker_config import auto_workers, refusal, worker_config
from fleetwire.server.worker_count import (
    cgroup_cpu_limit,
    cgroup_memory_limit,
    memory_bytes,
    memory_cap,
    parse_workers,
    quota_v1,
    quota_v2,
    worker_count,
)
from fleetwire.strictjson import ConfigError

# -- how many workers ----------------------------------------------------------------------


def test_workers_argument() -> None:
    assert parse_workers("auto") is None and parse_workers("AUTO") is None
    assert parse_workers("3") == 3
    for bad in ("0", "-1", "two", ""):
        with pytest.raises(ConfigError) as caught:
            parse_workers(bad)
        assert caught.value.key == "--workers" and "'auto'" in caught.value.message


@pytest.mark.parametrize(
    ("requested", "quota", "cpus", "expected"),
    [
        (3, 1.0, 8, 3),  # asked for: given, whatever the machine
        (None, None, 4, 4),  # no quota: the CPUs this process may run on
        (None, 2.0, 8, 2),  # a container limited to 2 CPUs on an 8-CPU node
        (None, 1.5, 8, 2),  # 1500m: rounded up
        (None, 0.5, 8, 1),  # 500m: one worker
        (None, 6.0, 2, 2),  # a quota above the CPUs pinned: the CPUs
        (None, None, 0, 1),  # at least one
    ],
)
def test_worker_count(requested: int | None, quota: float | None, cpus: int, expected: int) -> None:
    assert worker_count(requested, quota, cpus) == expected


MI = 2**20


@pytest.mark.parametrize(("limit", "cap"), [(128 * MI, 1), (256 * MI, 1), (512 * MI, 3), (1024 * MI, 7)])
def test_a_memory_limit_caps_the_workers_it_could_not_hold(limit: int, cap: int) -> None:
    """Each worker is a whole interpreter: a pod with only a memory limit on a 32-CPU node
    must not start 32 of them."""
    assert memory_cap(limit) == cap
    assert worker_count(None, None, 32, limit) == cap
    assert worker_count(None, 2.0, 32, 1024 * MI) == 2  # the CPU quota is lower
    assert worker_count(4, None, 32, 256 * MI) == 4  # asked for: given


def test_cgroup_memory_limit(tmp_path: Path) -> None:
    assert memory_bytes("max\n") is None and memory_bytes("9223372036854771712\n") is None
    assert memory_bytes("536870912\n") == 512 * MI
    proc = tmp_path / "cgroup"
    proc.write_text("0::/kubepods/pod1/container\n")
    root = tmp_path / "fs"
    (root / "kubepods/pod1/container").mkdir(parents=True)
    (root / "kubepods/pod1/container/memory.max").write_text("max\n")
    (root / "kubepods/pod1/memory.max").write_text(f"{512 * MI}\n")
    assert cgroup_memory_limit(root, proc) == 512 * MI
    v1 = tmp_path / "cgroup-v1"
    v1.write_text("5:memory:/docker/abc\n")
    mount = tmp_path / "fs1" / "memory" / "docker" / "abc"
    mount.mkdir(parents=True)
    (mount / "memory.limit_in_bytes").write_text(f"{256 * MI}\n")
    assert cgroup_memory_limit(tmp_path / "fs1", v1) == 256 * MI
    (mount / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    assert cgroup_memory_limit(tmp_path / "fs1", v1) is None


def test_cgroup_quota_files() -> None:
    assert quota_v2("200000 100000\n") == 2.0
    assert quota_v2("150000 100000") == 1.5
    assert quota_v2("max 100000") is None
    assert quota_v2("") is None and quota_v2("junk words") is None
    assert quota_v1("50000\n", "100000\n") == 0.5
    assert quota_v1("-1", "100000") is None
    assert quota_v1("", "") is None


def test_cgroup_v2_limit_is_the_lowest_on_the_path(tmp_path: Path) -> None:
    proc = tmp_path / "cgroup"
    proc.write_text("0::/kubepods/pod1/container\n")
    root = tmp_path / "fs"
    (root / "kubepods/pod1/container").mkdir(parents=True)
    (root / "kubepods/pod1/container/cpu.max").write_text("max 100000\n")
    (root / "kubepods/pod1/cpu.max").write_text("250000 100000\n")
    (root / "kubepods/cpu.max").write_text("400000 100000\n")
    assert cgroup_cpu_limit(root, proc) == 2.5
    (root / "kubepods/pod1/cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(root, proc) == 4.0
    (root / "kubepods/cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(root, proc) is None


def test_cgroup_v1_limit(tmp_path: Path) -> None:
    proc = tmp_path / "cgroup"
    proc.write_text("4:memory:/x\n3:cpu,cpuacct:/docker/abc\n0::/\n")
    mount = tmp_path / "fs" / "cpu,cpuacct" / "docker" / "abc"
    mount.mkdir(parents=True)
    (mount / "cpu.cfs_quota_us").write_text("150000\n")
    (mount / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_limit(tmp_path / "fs", proc) == 1.5
    (mount / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_limit(tmp_path / "fs", proc) is None
    assert cgroup_cpu_limit(tmp_path / "nowhere", tmp_path / "missing") is None


# -- restarts ---------------------------------------------------------------------------------


def test_restart_delay_doubles_up_to_a_bound() -> None:
    delays = [restart_delay(n) for n in range(1, 10)]
    assert delays[:4] == [0.5, 1.0, 2.0, 4.0]
    assert delays == sorted(delays) and delays[-1] == RESTART_MAX_SECONDS


# -- each worker's configuration --------------------------------------------------------------


def _config(tmp_path: Path, **sections: object) -> object:
    for name in ("c.pem", "k.pem", "ca.pem"):
        (tmp_path / name).write_text("x")
    data = {"port": 8443, "tls": {"server_cert": "c.pem", "server_key": "k.pem", "ca_file": "ca.pem"},
            "monitoring": {"prometheus_metrics_port": 9090}, **sections}
    config, _warnings = parse_config(data, tmp_path)
    return config


def test_a_worker_gets_no_metrics_port_and_an_mqtt_client_id_of_its_own(tmp_path: Path) -> None:
    config = _config(tmp_path, records={"V": ["mqtt"]}, mqtt={"broker": "localhost:1883", "client_id": "fw"})
    one = worker_config(config, 1, 2)
    assert one.monitoring.prometheus_metrics_port is None and one.port == 8443
    assert one.backend("mqtt").client_id == "fw-1"
    assert worker_config(config, 0, 2).backend("mqtt").client_id == "fw-0"
    assert config.backend("mqtt").client_id == "fw"  # the supervisor's copy is untouched
    alone = worker_config(config, 0, 1)
    assert alone.backend("mqtt").client_id == "fw"
    assert dataclasses.replace(one, monitoring=config.monitoring, backends=config.backends) == config


def test_zmq_cannot_be_split_over_workers(tmp_path: Path) -> None:
    config = _config(tmp_path, records={"V": ["zmq"]}, zmq={"addr": "tcp://127.0.0.1:5284"})
    problem = refusal(config, 2)
    assert problem is not None and problem.key == "zmq.addr" and "--workers 1" in problem.message
    assert refusal(config, 1) is None
    assert refusal(_config(tmp_path, records={"V": ["logger"]}), 4) is None


def test_auto_runs_one_worker_for_a_config_one_process_must_hold(tmp_path: Path) -> None:
    """`--workers auto` (the managed Deployment's default) is never refused: it falls back to 1."""
    zmq = _config(tmp_path, records={"V": ["zmq"]}, zmq={"addr": "tcp://127.0.0.1:5284"})
    workers, why = auto_workers(zmq, 4)
    assert workers == 1 and why is not None and "zmq.addr" in why
    assert auto_workers(zmq, 1) == (1, None)
    assert auto_workers(_config(tmp_path, records={"V": ["logger"]}), 4) == (4, None)


# -- one Prometheus view of several workers ------------------------------------------------------


def _worker(connections: int, records: int, latencies: list[float], reloads: int = 0) -> list[Metric]:
    metrics = ServerMetrics()
    metrics.connections_active.set(connections)
    metrics.records["V"] += records
    metrics.acks += records
    for seconds in latencies:
        metrics.dispatch_latency.labels("logger").observe(seconds)
    if reloads:
        metrics.certificate_reloads.labels("reloaded").inc(reloads)
    return list(metrics.registry.collect())


def _registry(metrics: list[Metric]) -> CollectorRegistry:
    registry = CollectorRegistry()

    class Fixed:
        def collect(self) -> list[Metric]:
            return metrics

    registry.register(Fixed())  # type: ignore[arg-type]
    return registry


def test_counters_gauges_and_histograms_sum_over_workers() -> None:
    merged = _registry(view([_worker(3, 10, [0.0002, 0.2], 1), _worker(4, 5, [0.003], 1)]))
    sample = merged.get_sample_value
    assert sample("fleetwire_connections_active") == 7
    assert sample("fleetwire_records_total", {"record_type": "V"}) == 15
    assert sample("fleetwire_acks_total") == 15
    assert sample("fleetwire_certificate_reloads_total", {"outcome": "reloaded"}) == 2
    bucket = {"dispatcher": "logger"}
    assert sample("fleetwire_dispatch_latency_seconds_count", bucket) == 3
    assert sample("fleetwire_dispatch_latency_seconds_sum", bucket) == pytest.approx(0.2032)
    assert sample("fleetwire_dispatch_latency_seconds_bucket", {**bucket, "le": "0.0005"}) == 1
    assert sample("fleetwire_dispatch_latency_seconds_bucket", {**bucket, "le": "0.005"}) == 2
    assert sample("fleetwire_dispatch_latency_seconds_bucket", {**bucket, "le": "+Inf"}) == 3
    assert sample("fleetwire_certificate_reloads_created", {"outcome": "reloaded"}) is None


def test_merged_histogram_keeps_its_buckets_in_order() -> None:
    registry = CollectorRegistry()
    histogram = Histogram("h", "h", ["d"], buckets=(1, 2), registry=registry)
    histogram.labels("b").observe(1.5)
    other = CollectorRegistry()
    Histogram("h", "h", ["d"], buckets=(1, 2), registry=other).labels("a").observe(0.5)
    [family] = view([list(registry.collect()), list(other.collect())])
    names = [(s.labels["d"], s.name.removeprefix("h"), s.labels.get("le")) for s in family.samples]
    assert names == [("a", "_bucket", "1.0"), ("a", "_bucket", "2.0"), ("a", "_bucket", "+Inf"),
                     ("a", "_count", None), ("a", "_sum", None),
                     ("b", "_bucket", "1.0"), ("b", "_bucket", "2.0"), ("b", "_bucket", "+Inf"),
                     ("b", "_count", None), ("b", "_sum", None)]


def test_a_retired_workers_counts_are_kept_but_not_its_gauges() -> None:
    retained = Retained()
    before = _registry(view([_worker(3, 10, [0.1]), _worker(4, 5, [])]))
    retained.keep(_worker(3, 10, [0.1]))  # worker 0 died; its replacement starts from nothing
    after = _registry(view([_worker(0, 0, []), _worker(4, 5, []), retained.metrics()]))
    for name, labels in (("fleetwire_records_total", {"record_type": "V"}), ("fleetwire_acks_total", {}),
                         ("fleetwire_dispatch_latency_seconds_count", {"dispatcher": "logger"})):
        assert after.get_sample_value(name, labels) == before.get_sample_value(name, labels), name
    assert after.get_sample_value("fleetwire_connections_active") == 4


def test_per_worker_family() -> None:
    views = [("0", _worker(3, 1, [])), ("1", _worker(5, 2, []))]
    spread = per_worker("fleetwire_worker_connections_active", "d", "fleetwire_connections_active", views)
    assert [(s.labels, s.value) for s in spread.samples] == [({"worker": "0"}, 3), ({"worker": "1"}, 5)]
    acks = per_worker("fleetwire_worker_acks", "d", "fleetwire_acks", views, kind="counter")
    assert [(s.name, s.value) for s in acks.samples] == [("fleetwire_worker_acks_total", 1),
                                                          ("fleetwire_worker_acks_total", 2)]


def test_families_of_the_same_name_merge_whatever_registry_made_them() -> None:
    a, b = CollectorRegistry(), CollectorRegistry()
    Counter("c", "c", registry=a).inc(2)
    Gauge("g", "g", registry=b).set(5)
    Counter("c", "c", registry=b).inc(3)
    families = merge([list(a.collect()), list(b.collect())])
    assert list(families) == ["c", "g"]
    assert families["c"].samples[("c_total", ())] == 5
