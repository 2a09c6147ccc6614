"""Shell that runs node launchers (srun steps) in the background and fails fast if one dies.

Distributed runtimes start long-lived daemons with ``srun ... &`` and then run a driver. If a
launcher exits while the driver still runs, a node is gone and the driver would hang or fail
late; the watchdog stops the driver and fails the job within a second instead. Polling with
``kill -0`` rather than ``wait -n -p`` keeps it working with bash older than 5.1.
"""

from __future__ import annotations

WATCHDOG_LINES = [
    "sgw_launchers=()",
    "sgw_stop_launchers() {",
    '  if (( ${#sgw_launchers[@]} )); then kill "${sgw_launchers[@]}" 2>/dev/null || true; wait || true; fi',
    "}",
    "trap sgw_stop_launchers EXIT",
    '# Run "$@" in the background; stop it and fail if any node launcher exits before it does.',
    "sgw_run_watched() {",
    '  "$@" &',
    "  local main=$! pid",
    '  while kill -0 "$main" 2>/dev/null; do',
    '    for pid in "${sgw_launchers[@]}"; do',
    '      if ! kill -0 "$pid" 2>/dev/null; then',
    '        echo "slurm-gateway: a node launcher (srun) exited early; stopping the job" >&2',
    '        kill "$main" 2>/dev/null || true',
    "        return 1",
    "      fi",
    "    done",
    "    sleep 1",
    "  done",
    '  wait "$main"',
    "}",
]
