"""Accounting: reconcile 100k job records with `slurm-gateway reconcile` vs the raw sacct call
that fetches them, in the same run (goal: reconcile <= 1.5x sacct), and the reconcile's memory.

The records are clones of one real job in slurmdbd's own tables (tests/bench/slurmdbd_records.py),
in January 2020, read back through sacct by both sides. The reconcile runs as its own process
(the real CLI, into a fresh SQLite database) so its peak RSS is its own.

Three passes over the same window: the first import (everything new), the periodic pass's case
(nothing changed: lines are compared by digest and skipped unparsed) and a repricing pass
(`--since` without `--no-reprice`: every record parsed and priced, nothing posted).

Last line: JSON with the times, their ratios to sacct and the reconcile process's peak RSS.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from slurm.usage_records import USAGE_ENV_OVERRIDES, usage_argv
from tests.bench.slurmdbd_records import BENCH_ACCOUNT, cloned_jobs, ensure_bench_account, run_template_job

RECORDS = 100_000
WINDOW_START = int(datetime(2020, 1, 1, tzinfo=UTC).timestamp())
CLI = str(Path(sys.executable).with_name("slurm-gateway"))
# Runs the real CLI in a child process and reports that process's own peak RSS on stderr.
MEASURED_CLI = (
    "import json, resource, sys\n"
    "from gateway.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "print(json.dumps({'maxrss_kb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}), file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def utc_iso(epoch: int) -> str:
    """``2020-01-01T00:00:00`` for the CLI's --since/--until."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def timed_sacct(start: int, end: int) -> tuple[float, int, int]:
    """The reconciler's own sacct call over the window: (seconds, the bench account's records,
    sacct's peak RSS in KiB)."""
    with tempfile.TemporaryFile() as stderr:
        began = time.perf_counter()
        process = subprocess.Popen(
            usage_argv(start, end),
            stdout=subprocess.PIPE,
            stderr=stderr,
            env={**os.environ, **USAGE_ENV_OVERRIDES},
        )
        assert process.stdout is not None
        with process.stdout:
            # Decoded, as the reconciler's command runner does.
            text = process.stdout.read().decode()
        # wait4, not Popen.wait: the child's own resource usage (peak RSS) comes with it.
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - began
        if process.returncode != 0:
            stderr.seek(0)
            raise RuntimeError(f"sacct failed: {stderr.read().decode().strip()}")
    return seconds, text.count(f"|{BENCH_ACCOUNT}|"), usage.ru_maxrss


def timed_reconcile(
    config_path: Path, start: int, end: int, *, reprice: bool = True
) -> tuple[float, dict[str, object], int]:
    """`slurm-gateway reconcile --since --until` in a child: (seconds, its report, peak RSS KiB)."""
    argv = ["reconcile", "--config", str(config_path), "--since", utc_iso(start), "--until", utc_iso(end)]
    if not reprice:
        argv.append("--no-reprice")
    began = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", MEASURED_CLI, *argv], capture_output=True, text=True, check=False
    )
    seconds = time.perf_counter() - began
    if result.returncode != 0:
        raise RuntimeError(f"reconcile failed ({result.returncode}): {result.stderr.strip()[-2000:]}")
    report = json.loads(result.stdout.strip().splitlines()[-1])
    maxrss_kb = json.loads(result.stderr.strip().splitlines()[-1])["maxrss_kb"]
    return seconds, report, maxrss_kb


def main() -> None:
    """Run the accounting benchmark and print its JSON result last."""
    ensure_bench_account()
    template = run_template_job()
    state_dir = Path(tempfile.mkdtemp(prefix="sgw-bench-accounting-", dir="/var/tmp"))
    config_path = state_dir / "gateway.toml"
    config_path.write_text(f'state_dir = "{state_dir}"\n')
    try:
        subprocess.run([CLI, "migrate", "--config", str(config_path)], check=True, capture_output=True)
        with cloned_jobs(template, RECORDS, WINDOW_START) as jobs:
            print(f"{jobs.count} records cloned into slurmdbd", flush=True)
            sacct_s, lines, sacct_rss_kb = timed_sacct(jobs.window_start, jobs.window_end)
            print(f"sacct: {lines} records in {sacct_s:.2f} s", flush=True)
            if lines != jobs.count:
                raise RuntimeError(f"sacct returned {lines} records, expected {jobs.count}")
            wall_s, report, reconcile_rss_kb = timed_reconcile(
                config_path, jobs.window_start, jobs.window_end
            )
            print(f"reconcile: {report}", flush=True)
            # The same window again, as the periodic pass reads it (nothing changed, nothing to
            # parse or post), and then repriced (every record parsed and priced, nothing posted).
            _, unchanged, _ = timed_reconcile(config_path, jobs.window_start, jobs.window_end, reprice=False)
            _, again, _ = timed_reconcile(config_path, jobs.window_start, jobs.window_end)
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)
    if report["records_seen"] != RECORDS or unchanged["entries_posted"] != 0 or again["entries_posted"] != 0:
        raise RuntimeError(f"unexpected reconcile reports: {report}, then {unchanged}, then {again}")
    print(
        json.dumps(
            {
                "benchmark": "accounting",
                "records": RECORDS,
                "baseline_sacct_s": round(sacct_s, 2),
                "reconcile_s": round(float(report["total_seconds"]), 2),
                "reconcile_sacct_part_s": round(float(report["sacct_seconds"]), 2),
                "reconcile_process_wall_s": round(wall_s, 2),
                "ratio_reconcile_to_sacct": round(float(report["total_seconds"]) / sacct_s, 2),
                "entries_posted": report["entries_posted"],
                "reconcile_peak_rss_mb": round(reconcile_rss_kb / 1024, 1),
                "baseline_sacct_peak_rss_mb": round(sacct_rss_kb / 1024, 1),
                "unchanged_pass_s": round(float(unchanged["total_seconds"]), 2),
                "unchanged_pass_sacct_part_s": round(float(unchanged["sacct_seconds"]), 2),
                "ratio_unchanged_pass_to_sacct": round(float(unchanged["total_seconds"]) / sacct_s, 2),
                "reprice_pass_s": round(float(again["total_seconds"]), 2),
                "reprice_pass_entries_posted": again["entries_posted"],
            }
        )
    )


if __name__ == "__main__":
    main()
