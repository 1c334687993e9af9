"""One Prometheus view of several worker processes: their metric families, merged.

Each worker keeps its own registry (its per-message counters stay plain ints, see
`metrics`); the supervisor asks every worker for its families and adds them up. Counters
and histograms sum (a histogram's buckets, count and sum are counters); gauges sum too,
which is right for connections, paused connections and queue depths. A VIN with sockets
on two workers counts once in each, so `fleetwire_connected_vins` may count it twice.

A worker that dies takes its counts with it; `Retained` keeps the last counters and
histograms collected from it, so that the totals never go backwards when it is
replaced (what it counted after that last collection is lost).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from prometheus_client.core import Metric

CUMULATIVE = frozenset({"counter", "histogram", "summary", "gaugehistogram"})
"""Families whose samples only grow: retained when their worker goes away."""
_SUFFIX_RANK = {"_bucket": 0, "_count": 1, "_sum": 2, "_gcount": 1, "_gsum": 2}

LabelSet = tuple[tuple[str, str], ...]
SampleKey = tuple[str, LabelSet]


@dataclass
class Family:
    """One metric family's samples summed over processes, keyed by (sample name, labels)."""

    name: str
    documentation: str
    type: str
    unit: str = ""
    samples: dict[SampleKey, float] = field(default_factory=dict)

    def add(self, metric: Metric) -> None:
        for sample in metric.samples:
            if sample.name.endswith("_created"):
                continue  # a per-process start time: meaningless summed
            key = (sample.name, tuple(sample.labels.items()))  # every process names its labels in one order
            self.samples[key] = self.samples.get(key, 0.0) + sample.value

    def metric(self) -> Metric:
        out = Metric(self.name, self.documentation, self.type, self.unit)
        for (name, labels), value in sorted(self.samples.items(), key=_sample_order):
            out.add_sample(name, dict(labels), value)
        return out


def _sample_order(item: tuple[SampleKey, float]) -> tuple[LabelSet, int, float, str]:
    """Histogram samples grouped by their label set, buckets in `le` order, then count and sum."""
    (name, labels), _value = item
    rest = tuple((k, v) for k, v in labels if k != "le")
    suffix = next((s for s in _SUFFIX_RANK if name.endswith(s)), "")
    le = next((v for k, v in labels if k == "le"), "")
    return rest, _SUFFIX_RANK.get(suffix, 0), float(le) if le else 0.0, name


def merge(collections: Iterable[Iterable[Metric]]) -> dict[str, Family]:
    """The families of every collection, summed sample by sample, in first-seen order."""
    families: dict[str, Family] = {}
    for metrics in collections:
        for metric in metrics:
            family = families.get(metric.name)
            if family is None:
                family = families[metric.name] = Family(metric.name, metric.documentation, metric.type, metric.unit)
            family.add(metric)
    return families


def cumulative(metrics: Iterable[Metric]) -> list[Metric]:
    """Only the families that must survive their process (counters, histograms)."""
    return [m for m in metrics if m.type in CUMULATIVE]


class Retained:
    """What workers that are gone had counted, added to every later view."""

    def __init__(self) -> None:
        self._families: dict[str, Family] = {}

    def keep(self, last: Sequence[Metric]) -> None:
        for name, family in merge([cumulative(last)]).items():
            mine = self._families.setdefault(name, Family(name, family.documentation, family.type, family.unit))
            for key, value in family.samples.items():
                mine.samples[key] = mine.samples.get(key, 0.0) + value

    def metrics(self) -> list[Metric]:
        return [family.metric() for family in self._families.values()]


def per_worker(name: str, documentation: str, source: str, views: Sequence[tuple[str, Sequence[Metric]]],
               *, kind: str = "gauge") -> Metric:
    """One family with a `worker` label from the unlabelled family `source` of each worker
    (e.g. its open connections): how the load spreads over the processes."""
    out = Metric(name, documentation, kind)
    sample_name = name + ("_total" if kind == "counter" else "")
    for worker, metrics in views:
        for metric in metrics:
            if metric.name != source:
                continue
            for sample in metric.samples:
                if not sample.labels and not sample.name.endswith("_created"):
                    out.add_sample(sample_name, {"worker": worker}, sample.value)
    return out


def view(collections: Iterable[Sequence[Metric]]) -> list[Metric]:
    """The whole server's families from the live workers' and what retired workers counted."""
    return [family.metric() for family in merge(collections).values()]
