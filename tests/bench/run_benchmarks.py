"""Run every ``bench_*.py`` module in this directory and relay its last JSON line.

Usage: ``python tests/bench/run_benchmarks.py``. Each module's ``main()`` prints
progress freely; its final JSON line is the result. Exits non-zero if any
benchmark raises or prints no JSON line.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent


def discover_benchmarks(directory: Path = BENCH_DIR) -> list[Path]:
    """Benchmark modules in ``directory``, sorted by name."""
    return sorted(directory.glob("bench_*.py"))


def run_benchmark(path: Path) -> str:
    """Import ``path``, call its ``main()`` and return the last JSON line it printed."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"{path.name}: cannot be imported")
    module = importlib.util.module_from_spec(spec)
    # Registered as an import would be: dataclasses and pickling look modules up by name.
    sys.modules[spec.name] = module
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        spec.loader.exec_module(module)
        module.main()
    for line in reversed(captured.getvalue().splitlines()):
        if _is_json(line):
            return line
    raise RuntimeError(f"{path.name}: printed no JSON result line")


def main() -> int:
    """Run all benchmarks; return the process exit code."""
    benchmarks = discover_benchmarks()
    if not benchmarks:
        print(f"no benchmarks yet (no bench_*.py in {BENCH_DIR})")
        return 0
    failures = 0
    for path in benchmarks:
        try:
            print(run_benchmark(path), flush=True)
        except Exception as exc:
            failures += 1
            print(f"{path.name}: FAILED: {exc}", file=sys.stderr)
    return 1 if failures else 0


def _is_json(line: str) -> bool:
    if not line.strip().startswith(("{", "[")):
        return False
    try:
        json.loads(line)
    except ValueError:
        return False
    return True


if __name__ == "__main__":
    raise SystemExit(main())
