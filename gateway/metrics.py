"""A small in-process Prometheus registry: counters, gauges and histograms with labels.

One registry per app (``app.state.metrics``). Code that wants a metric asks the registry for it
by name (``registry.counter(...)`` returns the existing one on later calls), so the HTTP layer,
the submitter and the reconciler can each register theirs without a central list.
Rendered in the Prometheus text exposition format 0.0.4.
"""

from __future__ import annotations

import math
import re
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TypeVar

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DEFAULT_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

_NAME_PATTERN = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_PATTERN = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")

LabelValues = tuple[str, ...]


class _Metric:
    kind = ""

    def __init__(self, name: str, help_text: str, labelnames: Sequence[str]) -> None:
        if not _NAME_PATTERN.fullmatch(name):
            raise ValueError(f"invalid metric name {name!r}")
        for label in labelnames:
            if not _LABEL_PATTERN.fullmatch(label) or label.startswith("__"):
                raise ValueError(f"invalid label name {label!r}")
        self.name = name
        self.help_text = help_text
        self.labelnames = tuple(labelnames)
        self._lock = threading.Lock()

    def _key(self, labels: Mapping[str, str]) -> LabelValues:
        if set(labels) != set(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {tuple(sorted(labels))}")
        return tuple(str(labels[label]) for label in self.labelnames)

    def _header(self) -> list[str]:
        return [f"# HELP {self.name} {_escape_help(self.help_text)}", f"# TYPE {self.name} {self.kind}"]

    def render(self) -> list[str]:
        """Exposition lines of this metric, HELP and TYPE first."""
        raise NotImplementedError


class _ValueSeries(_Metric):
    """A metric holding one number per label combination (counters and gauges)."""

    def __init__(self, name: str, help_text: str, labelnames: Sequence[str]) -> None:
        super().__init__(name, help_text, labelnames)
        self._values: dict[LabelValues, float] = {}

    def _add(self, amount: float, labels: Mapping[str, str]) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        """Current value of one series (0 when never touched)."""
        key = self._key(labels)
        with self._lock:
            return self._values.get(key, 0.0)

    def render(self) -> list[str]:
        """Exposition lines of this metric."""
        with self._lock:
            values = sorted(self._values.items())
        return self._header() + [
            f"{self.name}{_labels(self.labelnames, key)} {_number(value)}" for key, value in values
        ]


class Counter(_ValueSeries):
    """A value that only goes up (requests served, jobs submitted, ...)."""

    kind = "counter"

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        """Add ``amount`` (>= 0) to the series named by ``labels``."""
        if amount < 0:
            raise ValueError("a counter cannot decrease")
        self._add(amount, labels)


class Gauge(_ValueSeries):
    """A value that goes up and down (jobs by state, queue depth, ...)."""

    kind = "gauge"

    def set(self, value: float, **labels: str) -> None:
        """Set the series named by ``labels`` to ``value``."""
        key = self._key(labels)
        with self._lock:
            self._values[key] = value

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        """Add ``amount`` (may be negative) to a series."""
        self._add(amount, labels)

    def replace_all(self, values: Iterable[tuple[Mapping[str, str], float]]) -> None:
        """Replace every series at once: series absent from ``values`` disappear."""
        fresh = {self._key(labels): value for labels, value in values}
        with self._lock:
            self._values = fresh


class Histogram(_Metric):
    """Observations counted into cumulative buckets, with their sum and count."""

    kind = "histogram"

    def __init__(
        self, name: str, help_text: str, labelnames: Sequence[str], buckets: Sequence[float] = DEFAULT_BUCKETS
    ) -> None:
        super().__init__(name, help_text, labelnames)
        if "le" in self.labelnames:
            raise ValueError("a histogram cannot have a label named 'le'")
        bounds = sorted(float(bound) for bound in buckets if not math.isinf(bound))
        if not bounds:
            raise ValueError("a histogram needs at least one finite bucket")
        self.buckets = tuple(bounds)
        # Per series: counts per bucket (non-cumulative, +Inf last), sum.
        self._series: dict[LabelValues, tuple[list[int], list[float]]] = {}

    def observe(self, value: float, **labels: str) -> None:
        """Record one observation in the series named by ``labels``."""
        key = self._key(labels)
        index = bisect_left(self.buckets, value)
        with self._lock:
            counts, total = self._series.setdefault(key, ([0] * (len(self.buckets) + 1), [0.0]))
            counts[index] += 1
            total[0] += value

    def count(self, **labels: str) -> int:
        """How many observations one series holds."""
        key = self._key(labels)
        with self._lock:
            series = self._series.get(key)
            return sum(series[0]) if series else 0

    def render(self) -> list[str]:
        """Exposition lines: ``_bucket`` (cumulative, ``le`` label), ``_sum`` and ``_count``."""
        with self._lock:
            series = sorted((key, (list(counts), total[0])) for key, (counts, total) in self._series.items())
        lines = self._header()
        for key, (counts, total) in series:
            cumulative = 0
            for bound, bucket_count in zip([*self.buckets, math.inf], counts, strict=True):
                cumulative += bucket_count
                bucket_labels = _labels((*self.labelnames, "le"), (*key, _number(bound)))
                lines.append(f"{self.name}_bucket{bucket_labels} {cumulative}")
            lines.append(f"{self.name}_sum{_labels(self.labelnames, key)} {_number(total)}")
            lines.append(f"{self.name}_count{_labels(self.labelnames, key)} {cumulative}")
        return lines


_MetricT = TypeVar("_MetricT", bound=_Metric)
_CounterOrGauge = TypeVar("_CounterOrGauge", Counter, Gauge)


class MetricsRegistry:
    """Named metrics plus callbacks that refresh gauges just before each scrape."""

    def __init__(self) -> None:
        """An empty registry."""
        self._metrics: dict[str, _Metric] = {}
        self._scrape_callbacks: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    def counter(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> Counter:
        """The counter ``name``, created on first request."""
        return self._get_or_create(Counter, name, help_text, labelnames)

    def gauge(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> Gauge:
        """The gauge ``name``, created on first request."""
        return self._get_or_create(Gauge, name, help_text, labelnames)

    def histogram(
        self,
        name: str,
        help_text: str,
        labelnames: Sequence[str] = (),
        buckets: Sequence[float] = DEFAULT_BUCKETS,
    ) -> Histogram:
        """The histogram ``name``, created on first request (``buckets`` apply only then)."""
        with self._lock:
            existing = self._metrics.get(name)
            if existing is None:
                created = Histogram(name, help_text, labelnames, buckets)
                self._metrics[name] = created
                return created
        return _checked(existing, Histogram, labelnames)

    def on_scrape(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` before every render (e.g. to read gauges from the database)."""
        with self._lock:
            self._scrape_callbacks.append(callback)

    def render(self) -> str:
        """Refresh scrape-time gauges, then render every metric (may block: call off the loop)."""
        with self._lock:
            callbacks = list(self._scrape_callbacks)
            metrics = sorted(self._metrics.values(), key=lambda metric: metric.name)
        for callback in callbacks:
            callback()
        lines = [line for metric in metrics for line in metric.render()]
        return "\n".join(lines) + "\n"

    def _get_or_create(
        self, kind: type[_CounterOrGauge], name: str, help_text: str, labelnames: Sequence[str]
    ) -> _CounterOrGauge:
        with self._lock:
            existing = self._metrics.get(name)
            if existing is None:
                created = kind(name, help_text, labelnames)
                self._metrics[name] = created
                return created
        return _checked(existing, kind, labelnames)


def _checked(metric: _Metric, kind: type[_MetricT], labelnames: Sequence[str]) -> _MetricT:
    # Two callers registering one name differently is a programming error; fail loudly.
    if not isinstance(metric, kind) or metric.labelnames != tuple(labelnames):
        raise ValueError(
            f"metric {metric.name} already registered as a {metric.kind} with {metric.labelnames}"
        )
    return metric


def _labels(names: Sequence[str], values: Sequence[str]) -> str:
    if not names:
        return ""
    pairs = ",".join(f'{name}="{_escape_label(value)}"' for name, value in zip(names, values, strict=True))
    return "{" + pairs + "}"


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    # Whole numbers print without ".0" (counts read better); everything else as Python's repr.
    return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)
