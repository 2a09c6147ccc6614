"""CliSlurmDriver against the real dev cluster: submit, poll, find, cancel, capacity, refusals."""

from __future__ import annotations

import pwd
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from slurm.account_provisioning import SlurmAccountSpec, provision_account
from slurm.batch_job import BatchJob
from slurm.cli_driver import CliSlurmDriver
from slurm.command_runner import SubprocessCommandRunner
from slurm.errors import SlurmRejected
from slurm.hostlist import count_hosts
from slurm.observations import JobObservation
from tests.integration.slurm_cluster import SHARED_TEST_ROOT, run_command

pytestmark = [pytest.mark.integration, pytest.mark.slurm]

ACCOUNT = "sgw_cli_drv"


@pytest.fixture(scope="module")
def driver() -> CliSlurmDriver:
    runner = SubprocessCommandRunner(timeout_s=60)
    provision_account(
        runner, SlurmAccountSpec(account=ACCOUNT, qos=("normal",), default_qos=None, users=("alice",))
    )
    return CliSlurmDriver(runner)


def make_job(name: str, **changes: object) -> BatchJob:
    gateway_id = f"sgw_cli-{name}-{uuid.uuid4().hex[:10]}"
    values: dict[str, object] = {
        "gateway_job_id": gateway_id,
        "name": name,
        "unix_user": "alice",
        "account": ACCOUNT,
        "partition": "cpu",
        "working_dir": str(SHARED_TEST_ROOT / "cli_driver" / gateway_id),
        "time_limit_minutes": 5,
        "script": "sleep 2",
    }
    return BatchJob(**{**values, **changes})


def poll_until(
    driver: CliSlurmDriver, job_id: str, done: Callable[[JobObservation], bool], timeout: float = 90
) -> list[JobObservation]:
    """Poll one job until ``done``; return every observation seen."""
    seen: list[JobObservation] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        observation = driver.poll([job_id]).get(job_id)
        if observation is not None:
            seen.append(observation)
            if done(observation):
                return seen
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} not done in {timeout} s; seen {[o.state for o in seen]}")


def test_submit_poll_to_completion_and_find_by_comment(driver: CliSlurmDriver) -> None:
    job = make_job("complete", nodes=2, partition="gpu", script="srun hostname")
    slurm_id = driver.submit(job)
    workdir = Path(job.working_dir)
    assert (workdir.stat().st_uid, workdir.stat().st_mode & 0o777) == (pwd.getpwnam("alice").pw_uid, 0o750)
    seen = poll_until(driver, slurm_id, lambda o: o.is_terminal)
    final = seen[-1]
    assert (final.state, final.exit_code, final.signal, final.gateway_job_id) == (
        "COMPLETED",
        0,
        None,
        job.gateway_job_id,
    )
    # Terminal only once the record names both nodes (slurmdbd can lag behind by seconds).
    assert final.node_list is not None and count_hosts(final.node_list) == 2
    assert final.submit_time is not None and final.start_time is not None and final.end_time is not None
    assert {o.state for o in seen} <= {"PENDING", "RUNNING", "COMPLETING", "COMPLETED", "CONFIGURING"}
    assert driver.find_submitted([job.gateway_job_id, "sgw_cli-never-submitted"]) == {
        job.gateway_job_id: slurm_id
    }


def test_pending_job_has_a_reason_and_cancel_is_idempotent(driver: CliSlurmDriver) -> None:
    # More nodes than the partition has: pends forever (PartitionNodeLimit) until cancelled.
    job = make_job("pending", nodes=3, script="sleep 300")
    slurm_id = driver.submit(job)
    pending = poll_until(driver, slurm_id, lambda o: o.state == "PENDING")[-1]
    assert pending.reason is not None and pending.start_time is None
    assert driver.find_submitted([job.gateway_job_id]) == {job.gateway_job_id: slurm_id}
    driver.cancel(slurm_id)
    final = poll_until(driver, slurm_id, lambda o: o.is_terminal)[-1]
    assert final.state == "CANCELLED"
    driver.cancel(slurm_id)
    driver.cancel("99999997")


def test_running_job_cancelled(driver: CliSlurmDriver) -> None:
    slurm_id = driver.submit(make_job("running", script="sleep 300"))
    running = poll_until(driver, slurm_id, lambda o: o.state == "RUNNING")[-1]
    assert running.start_time is not None and running.node_list is not None and running.end_time is None
    driver.cancel(slurm_id)
    assert poll_until(driver, slurm_id, lambda o: o.is_terminal)[-1].state == "CANCELLED"


def test_failed_job_exit_code(driver: CliSlurmDriver) -> None:
    slurm_id = driver.submit(make_job("fail", script="exit 3"))
    final = poll_until(driver, slurm_id, lambda o: o.is_terminal)[-1]
    assert (final.state, final.exit_code) == ("FAILED", 3)


def test_poll_mixes_known_and_unknown_ids(driver: CliSlurmDriver) -> None:
    slurm_id = driver.submit(make_job("mixed", script="sleep 1"))
    result = driver.poll([slurm_id, "99999998"])
    assert set(result) == {slurm_id}
    assert driver.poll(["99999998"]) == {}
    assert driver.poll(["99999998", "99999999"]) == {}
    assert driver.poll([]) == {}


def test_array_tasks_and_parent(driver: CliSlurmDriver) -> None:
    slurm_id = driver.submit(make_job("array", array="0-2", script="sleep 1"))
    seen = poll_until(driver, slurm_id, lambda o: o.is_terminal)
    assert seen[-1].state == "COMPLETED"
    result = driver.poll([slurm_id])
    assert {f"{slurm_id}_0", f"{slurm_id}_1", f"{slurm_id}_2", slurm_id} <= set(result)
    assert all(obs.state == "COMPLETED" for obs in result.values())


def test_array_tasks_report_their_own_state_and_exit_code(driver: CliSlurmDriver) -> None:
    # Task 2 fails with exit 3; %2 keeps tasks 2 and 3 pending while 0 and 1 run.
    script = 'sleep 3\n[ "$SLURM_ARRAY_TASK_ID" != 2 ] || exit 3'
    slurm_id = driver.submit(make_job("array-tasks", array="0-3%2", script=script))
    try:
        seen = poll_until(driver, slurm_id, lambda o: o.is_terminal)
    finally:
        driver.cancel(slurm_id)
    waiting = [o for o in seen if {t.state for t in o.array_tasks} == {"RUNNING", "PENDING"}]
    assert waiting, [o.array_tasks for o in seen]
    assert [t.task_id for t in waiting[0].array_tasks] == [0, 1, 2, 3]
    assert {t.reason for t in waiting[0].array_tasks if t.state == "PENDING"} == {"JobArrayTaskLimit"}
    final = seen[-1]
    assert (final.state, final.exit_code) == ("FAILED", 3)
    assert {t.task_id: (t.state, t.exit_code) for t in final.array_tasks} == {
        0: ("COMPLETED", 0),
        1: ("COMPLETED", 0),
        2: ("FAILED", 3),
        3: ("COMPLETED", 0),
    }


def test_bad_account_is_rejected_naming_the_field(driver: CliSlurmDriver) -> None:
    with pytest.raises(SlurmRejected) as excinfo:
        driver.submit(make_job("badaccount", account="sgw_cli_no_such_account"))
    assert excinfo.value.field == "account"
    assert excinfo.value.message == "Invalid account or account/partition combination specified"


def test_gpus_on_the_cpu_partition_are_rejected(driver: CliSlurmDriver) -> None:
    with pytest.raises(SlurmRejected) as excinfo:
        driver.submit(make_job("cpugpu", gpus_per_node=1, gpu_type="h100"))
    assert excinfo.value.field == "resources"


def test_estimate_start(driver: CliSlurmDriver) -> None:
    job = make_job("estimate", partition="gpu", nodes=2, gpus_per_node=1, gpu_type="h100")
    estimate = driver.estimate_start(job)
    assert estimate is not None and estimate >= time.time() - 60
    assert not Path(job.working_dir).exists()
    with pytest.raises(SlurmRejected) as excinfo:
        driver.estimate_start(make_job("estimate-bad", account="sgw_cli_no_such_account"))
    assert excinfo.value.field == "account"


def test_partitions_agree_with_sinfo(driver: CliSlurmDriver) -> None:
    capacities = {capacity.name: capacity for capacity in driver.partitions()}
    totals: dict[str, int] = {}
    for line in run_command(["sinfo", "--noheader", "--Node", "--format=%R %N"]).stdout.splitlines():
        partition, _ = line.split()
        totals[partition] = totals.get(partition, 0) + 1
    assert {name: c.total_nodes for name, c in capacities.items()} == totals
    gpu = capacities["gpu"]
    assert (gpu.total_gpus, gpu.gpu_types) == (16, ("h100",))
    assert gpu.allocated_gpus + gpu.idle_gpus <= gpu.total_gpus
    assert gpu.idle_nodes + gpu.allocated_nodes <= gpu.total_nodes
    assert capacities["cpu"].total_gpus == 0
