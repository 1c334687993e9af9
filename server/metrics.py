"""Prometheus metrics of the server, in a registry of its own (one per server instance).

What is counted per message (records, errors, acks) is kept in plain integers and turned
into Prometheus samples only when scraped: a labelled Counter's locked add would cost more
than decoding the record.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from fleetwire.server.records import Record, render_problems
from fleetwire.server.handshake import REASONS as HANDSHAKE_REASONS


class ServerMetrics:
    """Connections, records by type, errors by reason, dispatch latency, queue depth."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.connections_active = Gauge(
            "fleetwire_connections_active", "Vehicle connections (sockets) currently open", registry=r
        )
        self.connected_vins = Gauge(
            "fleetwire_connected_vins", "VINs with at least one connection open", registry=r
        )
        self.connections_total = Counter(
            "fleetwire_connections", "Vehicle connections accepted", ["client_type"], registry=r
        )
        self.refused_total = Counter(
            "fleetwire_connections_refused",
            "Connections refused after the TLS handshake, by reason",
            ["reason"],
            registry=r,
        )
        self.tls_handshake_failures = Counter(
            "fleetwire_tls_handshake_failures",
            "TLS handshakes that failed (scanners, health checks, plain HTTP, unknown client CAs), by reason",
            ["reason"],
            registry=r,
        )
        for reason in HANDSHAKE_REASONS:  # every reason exported from the start, at 0
            self.tls_handshake_failures.labels(reason)
        # Counted on every message: plain integers, exported at scrape time by _HotCounters.
        self.records: collections.Counter[str] = collections.Counter()
        self.errors: collections.Counter[str] = collections.Counter()
        self.unrouted: collections.Counter[str] = collections.Counter()
        self.acks = 0
        r.register(_HotCounters(self))
        self.dispatch_latency = Histogram(
            "fleetwire_dispatch_latency_seconds",
            "Time from receipt to the dispatcher confirming a batch",
            ["dispatcher"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.dispatch_dropped = Counter(
            "fleetwire_dispatch_dropped", "Records dropped by lossy dispatchers when full", ["dispatcher"], registry=r
        )
        self.dispatch_failures = Counter(
            "fleetwire_dispatch_failures", "Failed publish attempts (retried)", ["dispatcher"], registry=r
        )
        self.queue_depth = Gauge(
            "fleetwire_dispatch_queue_depth", "Records waiting per dispatcher", ["dispatcher"], registry=r
        )
        self.paused_connections = Gauge(
            "fleetwire_connections_paused", "Connections whose reading is paused by back-pressure", registry=r
        )
        self.certificate_reloads = Counter(
            "fleetwire_certificate_reloads", "Server certificate reloads, by outcome", ["outcome"], registry=r
        )

    def error(self, reason: str) -> None:
        self.errors[reason] += 1


class _HotCounters(Collector):
    """Exports the per-message counters, which are plain ints so the hot path stays cheap."""

    def __init__(self, metrics: ServerMetrics) -> None:
        self._m = metrics

    def collect(self) -> Iterator[Metric]:
        m = self._m
        families = (
            ("fleetwire_records", "Records received and dispatched, by record type", "record_type", m.records),
            ("fleetwire_errors", "Frames answered with an error, by reason", "reason", m.errors),
            ("fleetwire_records_unrouted", "Valid records of a type no dispatcher is configured for",
             "record_type", m.unrouted),
        )
        for name, doc, label, counts in families:
            family = CounterMetricFamily(name, doc, labels=[label])
            for value, count in list(counts.items()):
                family.add_metric([value], count)
            yield family
        yield CounterMetricFamily("fleetwire_acks", "Acks sent to vehicles", value=m.acks)
        unrenderable = CounterMetricFamily(
            "fleetwire_records_unrenderable",
            "Records a dispatcher could not render as such: published with values printed raw, "
            "or given up alone when their encoding failed",
            labels=["record_type", "dispatcher"],
        )
        for (record_type, dispatcher), count in list(render_problems.counts.items()):
            unrenderable.add_metric([record_type, dispatcher], count)
        yield unrenderable


class QueueMetrics:
    """Feeds dispatch-queue events into `ServerMetrics` (a `QueueObserver`)."""

    def __init__(self, metrics: ServerMetrics) -> None:
        self._m = metrics

    def published(self, dispatcher: str, batch: Sequence[Record], now: float) -> None:
        if batch:
            # The oldest record of the batch waited longest: that is the latency users feel.
            self._m.dispatch_latency.labels(dispatcher).observe(max(0.0, now - batch[0].received_at))

    def dropped(self, dispatcher: str, count: int) -> None:
        self._m.dispatch_dropped.labels(dispatcher).inc(count)

    def failed(self, dispatcher: str, error: BaseException) -> None:
        self._m.dispatch_failures.labels(dispatcher).inc()
