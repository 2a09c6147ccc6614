"""The benchmark's wrk parser on recorded real wrk reports."""

from pathlib import Path

import pytest

from tests.bench.load_generator import parse_wrk_output

FIXTURES = Path(__file__).parent / "fixtures" / "wrk"


def test_parses_rate_and_percentiles_in_milliseconds() -> None:
    result = parse_wrk_output((FIXTURES / "slurmrestd_ping.txt").read_text())
    assert result.requests_per_s == pytest.approx(3453.63)
    assert result.p50_ms == pytest.approx(13.07)
    assert result.p99_ms == pytest.approx(47.87)
    assert result.errors == 0


def test_microseconds_and_non_2xx_responses_are_read() -> None:
    result = parse_wrk_output((FIXTURES / "unauthenticated_errors.txt").read_text())
    assert result.p50_ms == pytest.approx(0.719)
    assert result.errors == 10514


def test_a_report_without_percentiles_is_refused() -> None:
    with pytest.raises(RuntimeError, match="unexpected wrk output"):
        parse_wrk_output("Running 1s test @ http://x\nRequests/sec: 1.0\n")
