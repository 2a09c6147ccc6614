"""Hang detection: from a step's last heartbeat to the gateway cancelling it, and to Slurm's end.

The job's program beats ($SGW_HEARTBEAT_FILE, heartbeat source "program") once a second until
the benchmark tells it to stop, then hangs (sleeps far past the measurement). The last beat is
the heartbeat file's mtime. Figures, in seconds after the last beat, with the gateway's defaults
(hang limit ``workers.heartbeat_stale_s`` = 10 s, reconciler poll every 2 s):

- the gateway decided the step hung (its state_reason says so, while Slurm still runs it);
- Slurm reports the job CANCELLED (sacct), i.e. the allocation is being given back;
- the gateway shows the attempt ended ``hung``.

Baseline, same run: the configured limit itself, the earliest any detector honouring it could
act; Slurm alone never notices (the job would hold its nodes until its time limit).

Last line: JSON with the figures and the overhead over the limit.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from gateway.job_admission import job_working_dir
from slurm.job_layout import heartbeat_file
from tests.bench.gateway_process import BENCH_TENANT, RunningGateway, http_json, running_gateway
from tests.integration.slurm_cluster import run_command

STALE_LIMIT_S = 10
TIME_LIMIT_MINUTES = 5
JOB_SPEC = {
    "name": "bench-heartbeat",
    "script": ('while [ ! -e stop-beating ]; do touch "$SGW_HEARTBEAT_FILE"; sleep 1; done\nsleep 600\n'),
    "partition": "cpu",
    "time_limit": str(TIME_LIMIT_MINUTES),
    "heartbeat": {"source": "program"},
}
POLL_S = 0.1
TIMEOUT_S = 90


def job_view(gateway: RunningGateway, job_id: str) -> dict[str, object]:
    """The gateway's view of the job."""
    status, body = http_json("GET", f"{gateway.base_url}/v1/jobs/{job_id}", gateway.user_token)
    if status != 200:
        raise RuntimeError(f"reading job {job_id} failed: {status} {body}")
    return body


def wait_until(what: str, check: object, timeout_s: float = TIMEOUT_S) -> float:
    """Poll ``check()`` until true; return the epoch time it first was."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return time.time()
        time.sleep(POLL_S)
    raise RuntimeError(f"{what}: not seen within {timeout_s} s")


def slurm_state(slurm_job_id: str) -> str:
    """The job's state in Slurm's accounting (CANCELLED once scancel took it)."""
    return run_command(
        ["sacct", "-j", slurm_job_id, "-X", "-n", "-P", "-o", "State"], check=False
    ).stdout.strip()


def main() -> None:
    """Run the heartbeat benchmark and print its JSON result last."""
    with running_gateway() as gateway:
        status, body = http_json("POST", f"{gateway.base_url}/v1/jobs", gateway.user_token, JOB_SPEC)
        if status != 202:
            raise RuntimeError(f"submission refused: {status} {body}")
        job_id = str(body["id"])
        job_root = f"/var/lib/slurm-gateway/bench-jobs/{gateway.config_path.parent.name}"
        working_dir = job_working_dir(job_root, BENCH_TENANT, job_id)
        beat = Path(heartbeat_file(working_dir, "main", 1))
        wait_until("the first heartbeat", beat.exists)
        slurm_job_id = str(job_view(gateway, job_id)["slurm_job_id"])
        time.sleep(3)
        stop = Path(working_dir) / "stop-beating"
        stop.touch()
        os.chmod(stop, 0o644)
        # The program checks for the stop file between beats: wait until it stopped beating.
        time.sleep(2.5)
        last_beat = beat.stat().st_mtime
        decided = wait_until(
            "the gateway's hang decision", lambda: "hung" in str(job_view(gateway, job_id)["state_reason"])
        )
        cancelled = wait_until("Slurm's CANCELLED", lambda: slurm_state(slurm_job_id).startswith("CANCELLED"))
        ended = wait_until("the attempt ended hung", lambda: job_view(gateway, job_id)["state"] == "hung")
    print(
        json.dumps(
            {
                "benchmark": "heartbeat",
                "gateway_last_beat_to_hang_decision_s": round(decided - last_beat, 2),
                "gateway_last_beat_to_slurm_cancelled_s": round(cancelled - last_beat, 2),
                "gateway_last_beat_to_attempt_hung_s": round(ended - last_beat, 2),
                "baseline_stale_limit_s": STALE_LIMIT_S,
                "overhead_over_limit_s": round(decided - last_beat - STALE_LIMIT_S, 2),
                "slurm_alone_detects_after_s": TIME_LIMIT_MINUTES * 60,
            }
        )
    )


if __name__ == "__main__":
    main()
