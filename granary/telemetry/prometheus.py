"""The Prometheus backend of the metrics facade, and a node's `/metrics`.

Installed, the values live in prometheus_client's multiprocess files (one
file per process and kind in the node's metrics folder; the mode is made for
pre-forked servers such as ours): every S3 process of a node counts into the
same folder, and the primary's `/metrics` (`MetricsExposition`) merges them,
the counters of dead processes included, so a node's totals never go down
while it runs.

The text is written here, not by prometheus_client's encoder, to read as
Garage's does (dashboards and alert rules written for Garage match it):
counters keep their name (no `_total` suffix, no `_created` series) and
numbers print as `1`, not `1.0`, bucket bounds included.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import prometheus_client
from prometheus_client import CollectorRegistry, multiprocess, values
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from granary.telemetry import metrics

ENV_DIRECTORY = "PROMETHEUS_MULTIPROC_DIR"
"""Where prometheus_client's multiprocess mode keeps the values (it reads this)."""

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_folder: list[Path] = []


def _make(metric: metrics._Metric) -> Any:
    if isinstance(metric, metrics.Counter):
        return prometheus_client.Counter(
            metric.name, metric.documentation, metric.label_names, registry=None
        )
    if isinstance(metric, metrics.Gauge):
        return prometheus_client.Gauge(
            metric.name,
            metric.documentation,
            metric.label_names,
            registry=None,
            multiprocess_mode="livemax" if metric.across_processes == "max" else "livesum",
        )
    if isinstance(metric, metrics.Histogram):
        return prometheus_client.Histogram(
            metric.name,
            metric.documentation,
            metric.label_names,
            registry=None,
            buckets=metric.buckets,
        )
    raise TypeError(f"no Prometheus type for {type(metric).__name__}")


def install(directory: Path, *, fresh: bool) -> None:
    """Count, from now on, into the node's metrics folder `directory`.

    `fresh`: empty it first (the primary, once no process of an earlier run
    is left); the node's other processes join it as it is.
    """
    if fresh:
        shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)
    os.environ[ENV_DIRECTORY] = str(directory)
    values.ValueClass = values.MultiProcessValue()
    _folder[:] = [directory]
    metrics.bind_backend(_make)


def forget_process(pid: int) -> None:
    """A process of the node died: its gauges stop counting (its counters stay)."""
    if _folder:
        multiprocess.mark_process_dead(pid, str(_folder[0]))


GaugeReader = Callable[[], Iterable[tuple[Sequence[str], float]]]


class MetricsExposition:
    """The node's `/metrics`: every process's counted values, merged, plus gauges
    the primary reads at scrape time from state it already keeps."""

    def __init__(self, directory: Path) -> None:
        self.registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(self.registry, path=str(directory))
        self._read_at_scrape = _ReadAtScrape()
        self.registry.register(self._read_at_scrape)

    def gauge(
        self, name: str, documentation: str, labels: Sequence[str], read: GaugeReader
    ) -> None:
        """Expose `read()`'s (label values, value) pairs as gauge `name` at each scrape.

        `read` must be cheap: it runs on the event loop at every scrape, so it
        reads counts kept up to date elsewhere, never scans tables or disks.
        """
        self._read_at_scrape.gauges.append((name, documentation, tuple(labels), read))

    def render(self) -> bytes:
        return encode(self.registry.collect())


class _ReadAtScrape(Collector):
    def __init__(self) -> None:
        self.gauges: list[tuple[str, str, tuple[str, ...], GaugeReader]] = []

    def collect(self) -> Iterable[GaugeMetricFamily]:
        for name, documentation, labels, read in self.gauges:
            family = GaugeMetricFamily(name, documentation, labels=labels)
            for label_values, value in read():
                family.add_metric(list(label_values), value)
            yield family


def encode(families: Iterable[Metric]) -> bytes:
    """Prometheus text format 0.0.4, sorted by name (see the module docstring)."""
    lines: list[str] = []
    for family in sorted(families, key=lambda f: f.name):
        samples = [s for s in family.samples if not s.name.endswith("_created")]
        if not samples:
            continue
        lines.append(f"# HELP {family.name} {_escape_help(family.documentation)}")
        lines.append(f"# TYPE {family.name} {family.type}")
        for sample in samples:
            name = family.name if family.type == "counter" else sample.name
            lines.append(f"{name}{_labels(sample.labels)} {_number(sample.value)}")
    return ("\n".join(lines) + "\n").encode()


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    pairs = ",".join(
        f'{key}="{_escape_value(_number(float(value)) if key == "le" else value)}"'
        for key, value in sorted(labels.items())
    )
    return "{" + pairs + "}"


def _number(value: float) -> str:
    value = float(value)
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_value(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
