"""Node loss: from killing a node under a running 2-node job to the gateway's attempt 2 in Slurm.

The job's heartbeat (default: the wrapper's, stale after 10 s) may tell the gateway before Slurm
does; the attempt then ends ``hung`` instead of ``node_fail`` (Slurm records CANCELLED), and the
figure says which. The baseline is therefore when Slurm itself declared the node down (sinfo),
the moment it fails every job on it; the job's NODE_FAIL time is reported too when it happened.

In one run, against one kill: Slurm's own detection (kill → node down in sinfo, polled every
0.2 s) is the baseline; the gateway's figure is kill → attempt 2 holding a Slurm job id
(GET /v1/jobs/{id} every 0.1 s); their difference is what the gateway adds on top of Slurm (its
poll interval, the retry backoff, the submission), or saves when the heartbeat spoke first.

Last line: JSON with both figures and the overhead.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from gateway.job_admission import job_working_dir
from tests.bench.gateway_process import BENCH_TENANT, RunningGateway, http_json, running_gateway
from tests.integration.node_loss import job_nodes, kill_node, restore_node
from tests.integration.slurm_cluster import run_command

RETRY_BACKOFF_S = 1
JOB_SPEC = {
    "name": "bench-node-loss",
    "script": "if [ -e attempt1 ]; then exit 0; fi\ntouch attempt1\nsleep 120\n",
    "partition": "gpu",
    "nodes": 2,
    "time_limit": "5",
    # The step's heartbeat may go stale before Slurm declares the node dead: either way, retry.
    "retry": {"max_attempts": 2, "backoff_s": RETRY_BACKOFF_S, "on_states": ["NODE_FAIL", "HUNG"]},
}
SLURM_POLL_S = 0.2
GATEWAY_POLL_S = 0.1
TIMEOUT_S = 120


@dataclass
class Observed:
    """What the watchers saw, in seconds after the kill."""

    slurm_node_fail_s: float | None = None
    slurm_node_down_s: float | None = None
    slurm_states: list[str] = field(default_factory=list)
    gateway_node_fail_seen_s: float | None = None
    # How attempt 1 ended for the gateway: node_fail (Slurm noticed first) or hung (its heartbeat).
    gateway_attempt_1_outcome: str | None = None
    gateway_attempt_2_slurm_id_s: float | None = None
    gateway_last_view: dict[str, object] = field(default_factory=dict)
    # Each distinct (state, reason) the gateway showed after the kill, with when it first showed it.
    gateway_states: list[tuple[float, str, object]] = field(default_factory=list)


def job_view(gateway: RunningGateway, job_id: str) -> dict[str, object]:
    """The gateway's view of the job."""
    status, body = http_json("GET", f"{gateway.base_url}/v1/jobs/{job_id}", gateway.user_token)
    if status != 200:
        raise RuntimeError(f"reading job {job_id} failed: {status} {body}")
    return body


def wait_running(gateway: RunningGateway, job_id: str) -> str:
    """Wait until attempt 1 runs; return its Slurm job id."""
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        view = job_view(gateway, job_id)
        if view["state"] == "running":
            return str(view["slurm_job_id"])
        time.sleep(GATEWAY_POLL_S)
    raise RuntimeError(f"job {job_id} not running after {TIMEOUT_S} s")


def slurm_states(slurm_job_id: str) -> set[str]:
    """Every state Slurm reports for the job now: squeue's, and sacct's for each of its records."""
    queued = run_command(["squeue", "-h", "-j", slurm_job_id, "-o", "%T"], check=False).stdout.split()
    accounted = run_command(
        ["sacct", "-j", slurm_job_id, "--duplicates", "-X", "-n", "-P", "-o", "State"], check=False
    ).stdout.split()
    return {*queued, *accounted}


def node_is_down(node: str) -> bool:
    """Whether Slurm has declared ``node`` down (not responding)."""
    state = run_command(["sinfo", "-h", "-N", "-n", node, "-o", "%T"], check=False).stdout
    return "down" in state or "fail" in state


def slurm_detection(slurm_job_id: str, node: str, killed_at: float, observed: Observed) -> None:
    """Poll Slurm until it declared the node down and the job ended; record seconds after the kill."""
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        if observed.slurm_node_down_s is None and node_is_down(node):
            observed.slurm_node_down_s = time.perf_counter() - killed_at
        states = slurm_states(slurm_job_id)
        observed.slurm_states = sorted(states)
        if observed.slurm_node_fail_s is None and "NODE_FAIL" in states:
            observed.slurm_node_fail_s = time.perf_counter() - killed_at
        ended = (
            bool(states & {"NODE_FAIL", "CANCELLED", "FAILED", "COMPLETED"}) and "COMPLETING" not in states
        )
        if observed.slurm_node_down_s is not None and ended:
            return
        time.sleep(SLURM_POLL_S)


def gateway_recovery(gateway: RunningGateway, job_id: str, killed_at: float, observed: Observed) -> None:
    """Poll the gateway until attempt 2 has a Slurm id; also note when it saw attempt 1 fail."""
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        view = job_view(gateway, job_id)
        attempts = view["attempts"]
        assert isinstance(attempts, list)
        if (
            observed.gateway_node_fail_seen_s is None
            and attempts
            and attempts[0]["state"] in ("node_fail", "hung")
        ):
            observed.gateway_node_fail_seen_s = time.perf_counter() - killed_at
            observed.gateway_attempt_1_outcome = str(attempts[0]["state"])
        if view["attempt"] == 2 and view["slurm_job_id"]:
            observed.gateway_attempt_2_slurm_id_s = time.perf_counter() - killed_at
            return
        observed.gateway_last_view = {key: view[key] for key in ("attempt", "state", "state_reason")}
        shown = (str(view["state"]), view["state_reason"])
        if not observed.gateway_states or observed.gateway_states[-1][1:] != shown:
            observed.gateway_states.append((round(time.perf_counter() - killed_at, 2), *shown))
        time.sleep(GATEWAY_POLL_S)


def wait_for_file(path: Path, timeout_s: float = 60) -> None:
    """Wait until ``path`` exists (attempt 1's script has started)."""
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path} did not appear in {timeout_s} s")
        time.sleep(0.1)


def main() -> None:
    """Run the node-loss benchmark and print its JSON result last."""
    with running_gateway() as gateway:
        status, body = http_json("POST", f"{gateway.base_url}/v1/jobs", gateway.user_token, JOB_SPEC)
        if status != 202:
            raise RuntimeError(f"submission refused: {status} {body}")
        job_id = str(body["id"])
        job_root = f"/var/lib/slurm-gateway/bench-jobs/{gateway.config_path.parent.name}"
        slurm_job_id = wait_running(gateway, job_id)
        lost = job_nodes(slurm_job_id)[0]
        wait_for_file(Path(job_working_dir(job_root, BENCH_TENANT, job_id)) / "attempt1")

        observed = Observed()
        try:
            killed_at = time.perf_counter()
            kill_node(lost)
            watchers = [
                threading.Thread(target=slurm_detection, args=(slurm_job_id, lost, killed_at, observed)),
                threading.Thread(target=gateway_recovery, args=(gateway, job_id, killed_at, observed)),
            ]
            for watcher in watchers:
                watcher.start()
            for watcher in watchers:
                watcher.join()
        finally:
            restore_node(lost)

    slurm_s, gateway_s = observed.slurm_node_down_s, observed.gateway_attempt_2_slurm_id_s
    if slurm_s is None:
        raise RuntimeError(f"Slurm never declared {lost} down (job states {observed.slurm_states})")
    if gateway_s is None:
        raise RuntimeError(
            f"the gateway sent no attempt 2 in {TIMEOUT_S} s after the kill (Slurm states "
            f"{observed.slurm_states}, gateway {observed.gateway_last_view})"
        )
    seen_s = observed.gateway_node_fail_seen_s
    print(
        json.dumps(
            {
                "benchmark": "node_loss",
                "gateway_kill_to_attempt_2_slurm_id_s": round(gateway_s, 2),
                "gateway_kill_to_node_fail_seen_s": None if seen_s is None else round(seen_s, 2),
                "baseline_slurm_kill_to_node_down_s": round(slurm_s, 2),
                "slurm_kill_to_job_node_fail_s": (
                    None if observed.slurm_node_fail_s is None else round(observed.slurm_node_fail_s, 2)
                ),
                "gateway_overhead_s": round(gateway_s - slurm_s, 2),
                "retry_backoff_s": RETRY_BACKOFF_S,
                "gateway_attempt_1_outcome": observed.gateway_attempt_1_outcome,
                "slurm_states_at_end": observed.slurm_states,
                "gateway_states_after_kill": observed.gateway_states,
                "lost_node": lost,
            }
        )
    )


if __name__ == "__main__":
    main()
