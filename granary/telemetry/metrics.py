"""Metrics: the facade the other layers count through. Dependency-free.

Modules declare their metrics at import time (`Counter`, `Gauge`,
`Histogram`, with Prometheus names and label names) and count through them.
Nothing is counted until a backend is bound (`bind_backend`, done by
`telemetry.prometheus.install` in the node's processes): unit tests, the
CLI and tools pay one empty call.

A labelled metric is used through `labels(...)`, which returns a bound
child; keep it (e.g. per endpoint, built once) rather than calling
`labels` per request: once bound, its methods are the backend's own
(~0.2 µs an increment, ~0.3 µs an observation here).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

LATENCY_BUCKETS = (
    *(0.001, 0.0015, 0.002, 0.003, 0.005, 0.007),
    *(0.01, 0.015, 0.02, 0.03, 0.05, 0.07),
    *(0.1, 0.15, 0.2, 0.3, 0.5, 0.7),
    *(1, 1.5, 2, 3, 5, 7),
    *(10, 15, 20, 30, 40, 50, 60, 70, 100),
)
"""Seconds: Garage's bounds for every duration histogram, so its queries carry over."""

_declared: list[_Metric] = []
_backend: list[Callable[[_Metric], Any]] = []  # at most one: what makes a metric's counter


class _Metric:
    kind = ""

    def __init__(self, name: str, documentation: str, labels: Sequence[str] = ()) -> None:
        self.name = name
        self.documentation = documentation
        self.label_names = tuple(labels)
        self._impl: Any = None
        self._children: dict[tuple[str, ...], _Bound] = {}
        _declared.append(self)
        if _backend:
            self._bind(_backend[0])

    def _bind(self, make: Callable[[_Metric], Any]) -> None:
        self._impl = make(self)
        for child in self._children.values():
            child._attach(self._impl)

    def labels(self, *values: str) -> _Bound:
        """The child for these label values (cached: keep it where it is used)."""
        child = self._children.get(values)
        if child is None:
            if len(values) != len(self.label_names):
                raise ValueError(f"{self.name} takes labels {self.label_names}, got {values}")
            child = self._children[values] = _Bound(self, values)
        return child


class _Bound:
    """A metric with its label values: the object the hot paths keep.

    Until a backend is bound its methods do nothing; once bound, the backend's
    own methods replace them on the instance, so a call costs no more than
    calling the backend directly.
    """

    def __init__(self, metric: _Metric, label_values: tuple[str, ...]) -> None:
        self._values = label_values
        if metric._impl is not None:
            self._attach(metric._impl)

    def _attach(self, impl: Any) -> None:
        child = impl.labels(*self._values)
        for name in ("inc", "dec", "set", "observe"):
            method = getattr(child, name, None)
            if method is not None:
                self.__dict__[name] = method

    def inc(self, amount: float = 1.0) -> None:
        """Nothing is counted before a backend is bound."""

    def dec(self, amount: float = 1.0) -> None:
        """Nothing is counted before a backend is bound."""

    def set(self, value: float) -> None:
        """Nothing is counted before a backend is bound."""

    def observe(self, value: float) -> None:
        """Nothing is counted before a backend is bound."""


class Counter(_Metric):
    kind = "counter"

    def inc(self, amount: float = 1.0) -> None:
        if self._impl is not None:
            self._impl.inc(amount)


class Gauge(_Metric):
    """A value each process sets; the node shows the sum over its live processes
    (`across_processes="max"`: the largest)."""

    kind = "gauge"

    def __init__(
        self,
        name: str,
        documentation: str,
        labels: Sequence[str] = (),
        across_processes: Literal["sum", "max"] = "sum",
    ) -> None:
        self.across_processes = across_processes
        super().__init__(name, documentation, labels)

    def inc(self, amount: float = 1.0) -> None:
        if self._impl is not None:
            self._impl.inc(amount)

    def dec(self, amount: float = 1.0) -> None:
        if self._impl is not None:
            self._impl.dec(amount)

    def set(self, value: float) -> None:
        if self._impl is not None:
            self._impl.set(value)


class Histogram(_Metric):
    kind = "histogram"

    def __init__(
        self,
        name: str,
        documentation: str,
        labels: Sequence[str] = (),
        buckets: Sequence[float] = LATENCY_BUCKETS,
    ) -> None:
        self.buckets = tuple(buckets)
        super().__init__(name, documentation, labels)

    def observe(self, value: float) -> None:
        if self._impl is not None:
            self._impl.observe(value)


def backend_bound() -> bool:
    return bool(_backend)


def bind_backend(make: Callable[[_Metric], Any]) -> None:
    """Count every metric, declared or to come, into what `make(metric)` returns
    (an object with the methods labels, inc, dec, set and observe, as prometheus_client's)."""
    _backend[:] = [make]
    for metric in _declared:
        metric._bind(make)
