"""HTTP load with wrk (Debian's package, installed by `make bench`), parsed into numbers."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


@dataclass(frozen=True)
class LoadResult:
    """What one wrk run measured."""

    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int


def run_wrk(
    url: str, headers: dict[str, str], *, connections: int, duration_s: int = 10, threads: int = 2
) -> LoadResult:
    """Hammer ``url`` with ``connections`` concurrent keep-alive clients for ``duration_s``."""
    # wrk refuses fewer connections than threads.
    threads = min(threads, connections)
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration_s}s", "--latency", "--timeout", "10s"]
    for name, value in headers.items():
        argv += ["-H", f"{name}: {value}"]
    out = subprocess.run([*argv, url], check=True, capture_output=True, text=True).stdout
    return parse_wrk_output(out)


def parse_wrk_output(text: str) -> LoadResult:
    """Requests/s, p50/p99 latency and error count from wrk's --latency report."""
    percentiles = {
        float(p): float(v) * _UNITS_MS[unit]
        for p, v, unit in re.findall(r"^\s+(\d+(?:\.\d+)?)%\s+([\d.]+)(us|ms|s)\s*$", text, re.MULTILINE)
    }
    rate = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if rate is None or 50.0 not in percentiles or 99.0 not in percentiles:
        raise RuntimeError(f"unexpected wrk output:\n{text}")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    errors = int(non_2xx.group(1)) if non_2xx else 0
    if socket_errors:
        errors += sum(int(count) for count in socket_errors.groups())
    return LoadResult(
        requests_per_s=float(rate.group(1)), p50_ms=percentiles[50.0], p99_ms=percentiles[99.0], errors=errors
    )
