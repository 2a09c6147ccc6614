import pytest

from gateway.metrics import MetricsRegistry


def test_counter_renders_with_labels_and_escaping() -> None:
    registry = MetricsRegistry()
    counter = registry.counter("jobs_total", "Jobs.\nAll of them.", ("outcome",))
    counter.inc(outcome='ok "quoted"')
    registry.counter("jobs_total", "Jobs.", ("outcome",)).inc(2, outcome='ok "quoted"')
    assert registry.render() == (
        "# HELP jobs_total Jobs.\\nAll of them.\n"
        "# TYPE jobs_total counter\n"
        'jobs_total{outcome="ok \\"quoted\\""} 3\n'
    )


def test_histogram_buckets_are_cumulative_and_inclusive() -> None:
    registry = MetricsRegistry()
    histogram = registry.histogram("latency_seconds", "Latency.", buckets=(0.1, 1.0))
    for value in (0.1, 0.5, 3.0):
        histogram.observe(value)
    lines = registry.render().splitlines()
    assert 'latency_seconds_bucket{le="0.1"} 1' in lines
    assert 'latency_seconds_bucket{le="1"} 2' in lines
    assert 'latency_seconds_bucket{le="+Inf"} 3' in lines
    assert "latency_seconds_sum 3.6" in lines
    assert "latency_seconds_count 3" in lines


def test_scrape_callbacks_replace_gauge_series() -> None:
    registry = MetricsRegistry()
    gauge = registry.gauge("jobs", "Jobs by state.", ("state",))
    snapshots = iter([{"running": 2.0, "pending": 1.0}, {"pending": 4.0}])
    registry.on_scrape(lambda: gauge.replace_all(({"state": k}, v) for k, v in next(snapshots).items()))
    assert 'jobs{state="running"} 2' in registry.render()
    second = registry.render()
    assert 'jobs{state="pending"} 4' in second
    assert "running" not in second


def test_conflicting_registration_and_labels_fail() -> None:
    registry = MetricsRegistry()
    registry.counter("requests_total", "Requests.", ("status",))
    with pytest.raises(ValueError, match="already registered"):
        registry.gauge("requests_total", "Requests.", ("status",))
    with pytest.raises(ValueError, match="takes labels"):
        registry.counter("requests_total", "Requests.", ("status",)).inc(route="/x")
    with pytest.raises(ValueError, match="cannot decrease"):
        registry.counter("requests_total", "Requests.", ("status",)).inc(-1, status="200")
