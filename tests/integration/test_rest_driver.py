"""RestSlurmDriver against the dev cluster's real slurmrestd (jobs run as alice)."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pytest

from slurm import rest_v0038
from slurm.batch_job import BatchJob
from slurm.errors import JobSpecError, SlurmRejected, SlurmUnavailable
from slurm.observations import JobObservation
from slurm.rest_driver import RestSlurmDriver
from tests.integration.slurm_cluster import (
    SHARED_TEST_ROOT,
    ensure_account,
    job_record,
    run_command,
    wait_for_state,
)

pytestmark = [pytest.mark.integration, pytest.mark.slurm]

REST_URL = "http://127.0.0.1:6820"
KEY_PATH = Path("/var/lib/slurm/slurmctld/jwt_hs256.key")
ACCOUNT = "sgw_rest_test"


@pytest.fixture(scope="module")
def driver() -> RestSlurmDriver:
    ensure_account(ACCOUNT, ["alice"])
    return RestSlurmDriver(REST_URL, KEY_PATH, timeout_s=30)


def rest_job(**changes: object) -> BatchJob:
    gateway_id = f"sgw_rest-{uuid.uuid4().hex[:12]}"
    fields: dict[str, object] = {
        "gateway_job_id": gateway_id,
        "name": "sgw_rest_test",
        "unix_user": "alice",
        "account": ACCOUNT,
        "partition": "cpu",
        "working_dir": str(SHARED_TEST_ROOT / "sgw_rest" / gateway_id),
        "time_limit_minutes": 5,
        "script": "true",
    }
    fields.update(changes)
    return BatchJob(**fields)  # type: ignore[arg-type]


def wait_for(driver: RestSlurmDriver, job_id: str, states: set[str], timeout: float = 90) -> JobObservation:
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        seen = driver.poll([job_id]).get(job_id)
        if seen is not None and seen.state in states:
            return seen
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not reach {sorted(states)} in {timeout} s; last {seen}")


def test_a_job_runs_as_its_user_and_is_polled_to_completed(driver: RestSlurmDriver) -> None:
    script = 'id -un > whoami.txt\nprintf "%s" "$GREETING" > greeting.txt'
    job = rest_job(script=script, env={"GREETING": "a,b c"})
    job_id = driver.submit(job)

    done = wait_for(driver, job_id, {"COMPLETED", "FAILED"})

    assert (done.state, done.exit_code, done.gateway_job_id) == ("COMPLETED", 0, job.gateway_job_id)
    assert done.node_list is not None and done.start_time is not None and done.end_time is not None
    workdir = Path(job.working_dir)
    assert (workdir / "whoami.txt").read_text().strip() == "alice"
    assert (workdir / "greeting.txt").read_text() == "a,b c"
    assert workdir.stat().st_uid == int(run_command(["id", "-u", "alice"]).stdout)
    assert job_record(job_id, ["User", "Account"]) == {"User": "alice", "Account": ACCOUNT}


def test_a_failing_job_reports_its_exit_code(driver: RestSlurmDriver) -> None:
    job_id = driver.submit(rest_job(script="exit 3"))
    failed = wait_for(driver, job_id, {"COMPLETED", "FAILED"})
    assert (failed.state, failed.exit_code) == ("FAILED", 3)


def test_a_running_multi_node_gpu_job_is_cancelled(driver: RestSlurmDriver) -> None:
    job = rest_job(
        partition="gpu", nodes=2, gpus_per_node=1, gpu_type="h100", constraints=("ib",), script="sleep 300"
    )
    job_id = driver.submit(job)
    try:
        running = wait_for(driver, job_id, {"RUNNING"})
        nodes = run_command(["scontrol", "show", "hostnames", running.node_list or ""]).stdout.split()
        assert len(nodes) == 2
        tres = run_command(["squeue", "--noheader", "--jobs", job_id, "--format=%b"]).stdout.strip()
        assert tres.endswith("gpu:h100:1")
    finally:
        driver.cancel(job_id)
    cancelled = wait_for(driver, job_id, {"CANCELLED"})
    assert cancelled.end_time is not None
    driver.cancel(job_id)  # already over: still fine


def test_an_array_is_polled_under_its_id_with_each_task(driver: RestSlurmDriver) -> None:
    job = rest_job(array="0-1", script='echo "$SLURM_ARRAY_TASK_ID" > "task-$SLURM_ARRAY_TASK_ID.txt"')
    array_id = driver.submit(job)
    done = wait_for(driver, array_id, {"COMPLETED", "FAILED"})
    assert (done.state, done.gateway_job_id) == ("COMPLETED", job.gateway_job_id)
    observed = driver.poll([array_id])
    assert {observed[f"{array_id}_{task}"].state for task in (0, 1)} == {"COMPLETED"}
    assert (Path(job.working_dir) / "task-1.txt").read_text() == "1\n"
    assert (Path(job.working_dir) / f"slurm-{array_id}_1.out").exists()


# Task 2 fails with exit 3; %2 keeps tasks 2 and 3 pending while 0 and 1 run.
ARRAY_SCRIPT = 'sleep 3\n[ "$SLURM_ARRAY_TASK_ID" != 2 ] || exit 3'


def task_states(observation: JobObservation) -> dict[int, tuple[str, int | None]]:
    return {task.task_id: (task.state, task.exit_code) for task in observation.array_tasks}


def test_an_array_reports_each_task_while_running_and_after_the_end(driver: RestSlurmDriver) -> None:
    array_id = driver.submit(rest_job(array="0-3%2", script=ARRAY_SCRIPT))
    try:
        seen: list[JobObservation] = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not (seen and seen[-1].is_terminal):
            observation = driver.poll([array_id]).get(array_id)
            seen += [observation] if observation is not None else []
            time.sleep(0.5)
    finally:
        driver.cancel(array_id)
    assert seen and seen[-1].is_terminal
    # While 0 and 1 run, 2 and 3 wait behind the %2 throttle, each under its own id.
    waiting = [o for o in seen if {t.state for t in o.array_tasks} == {"RUNNING", "PENDING"}]
    assert waiting, [task_states(o) for o in seen]
    assert [t.task_id for t in waiting[0].array_tasks] == [0, 1, 2, 3]
    assert {t.reason for t in waiting[0].array_tasks if t.state == "PENDING"} == {"JobArrayTaskLimit"}
    final = seen[-1]
    assert (final.state, final.exit_code) == ("FAILED", 3)
    assert task_states(final) == {
        0: ("COMPLETED", 0),
        1: ("COMPLETED", 0),
        2: ("FAILED", 3),
        3: ("COMPLETED", 0),
    }


def test_a_dependent_job_waits_for_its_parent(driver: RestSlurmDriver) -> None:
    parent_id = driver.submit(rest_job(script="sleep 4"))
    child_id = driver.submit(rest_job(dependencies=(parent_id,)))
    try:
        waiting = wait_for(driver, child_id, {"PENDING"})
        assert waiting.reason == "Dependency"
        assert job_dependency(child_id) == f"afterok:{parent_id}(unfulfilled)"
        assert wait_for(driver, parent_id, {"COMPLETED", "FAILED"}).state == "COMPLETED"
        done = wait_for(driver, child_id, {"COMPLETED", "FAILED", "CANCELLED"})
        assert (done.state, done.exit_code) == ("COMPLETED", 0)
    finally:
        driver.cancel(parent_id)
        driver.cancel(child_id)


def job_dependency(job_id: str) -> str:
    """The Dependency= field of ``scontrol show job``."""
    fields = run_command(["scontrol", "show", "job", job_id]).stdout.split()
    return next(field for field in fields if field.startswith("Dependency=")).removeprefix("Dependency=")


def test_a_signal_before_the_limit_is_refused_as_slurmrestd_cannot_send_it(driver: RestSlurmDriver) -> None:
    # 22.05's slurmrestd refuses "B:USR2@60" (tests/unit/fixtures/slurmrestd/submit_signal_batch_shell.json).
    job = rest_job(signal_before_limit_s=60)
    with pytest.raises(JobSpecError) as caught:
        driver.submit(job)
    assert caught.value.field == "signal_before_limit_s"
    assert driver.find_submitted([job.gateway_job_id]) == {}


def test_cancelling_an_unknown_job_is_not_an_error(driver: RestSlurmDriver) -> None:
    driver.cancel("99999999")


def test_find_submitted_by_gateway_comment(driver: RestSlurmDriver) -> None:
    queued = rest_job(script="sleep 30")
    ended = rest_job()
    queued_id, ended_id = driver.submit(queued), driver.submit(ended)
    try:
        wait_for(driver, ended_id, {"COMPLETED"})
        asked = [queued.gateway_job_id, ended.gateway_job_id, "sgw_rest-never-submitted"]
        found = driver.find_submitted(asked)
        assert found == {queued.gateway_job_id: queued_id, ended.gateway_job_id: ended_id}
    finally:
        driver.cancel(queued_id)


def test_ended_jobs_are_found_in_accounting(driver: RestSlurmDriver) -> None:
    # slurmctld keeps ended jobs for MinJobAge (300 s), so poll and find_submitted only reach
    # slurmdbd for older jobs; these calls exercise that path on jobs that just ended.
    ok, failed = rest_job(), rest_job(script="exit 3")
    ok_id, failed_id = driver.submit(ok), driver.submit(failed)
    wait_for_state(ok_id)
    wait_for_state(failed_id)

    recorded = rest_v0038.observations_for([ok_id, failed_id], driver._recorded([ok_id, failed_id]))

    assert (recorded[ok_id].state, recorded[ok_id].exit_code, recorded[ok_id].gateway_job_id) == (
        "COMPLETED",
        0,
        ok.gateway_job_id,
    )
    assert recorded[failed_id].state == "FAILED"
    assert recorded[ok_id].end_time is not None and recorded[ok_id].node_list is not None
    recorded_ids = {obs.gateway_job_id: keys[0] for keys, obs in driver._recorded_submissions()}
    assert (recorded_ids[ok.gateway_job_id], recorded_ids[failed.gateway_job_id]) == (ok_id, failed_id)


def test_an_account_the_user_is_not_in_is_refused(driver: RestSlurmDriver) -> None:
    with pytest.raises(SlurmRejected) as caught:
        driver.submit(rest_job(account="sgw_rest_no_such_account"))
    assert caught.value.field == "account"
    assert "Invalid account" in caught.value.message


def test_partitions_match_sinfo(driver: RestSlurmDriver) -> None:
    # Other tests run jobs concurrently: retry until one reading agrees on both sides.
    for _ in range(10):
        before = sinfo_counts()
        capacities = {capacity.name: capacity for capacity in driver.partitions()}
        if before == sinfo_counts():
            break
    ours = {name: (c.total_nodes, c.allocated_nodes, c.idle_nodes) for name, c in capacities.items()}
    assert ours == before
    assert (capacities["gpu"].total_gpus, capacities["gpu"].gpu_types) == (16, ("h100",))
    assert capacities["cpu"].total_gpus == 0


def sinfo_counts() -> dict[str, tuple[int, int, int]]:
    counts = {}
    for line in run_command(["sinfo", "--noheader", "--format=%R %F"]).stdout.splitlines():
        name, nodes = line.split()
        allocated, idle, _other, total = (int(n) for n in nodes.split("/"))
        counts[name] = (total, allocated, idle)
    return counts


def test_a_wrong_key_makes_slurmrestd_unavailable(tmp_path: Path) -> None:
    wrong_key = tmp_path / "jwt.key"
    wrong_key.write_bytes(os.urandom(32))
    with pytest.raises(SlurmUnavailable, match="slurmrestd could not list jobs"):
        RestSlurmDriver(REST_URL, wrong_key, timeout_s=10).poll(["1"])


def test_an_unreachable_slurmrestd_is_unavailable() -> None:
    with pytest.raises(SlurmUnavailable, match=r"slurmrestd GET /slurm/v0\.0\.38/jobs"):
        RestSlurmDriver("http://127.0.0.1:9", KEY_PATH, timeout_s=5).poll(["1"])
