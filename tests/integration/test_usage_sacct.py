"""usage_records and association_limits against the real cluster: a small workload under a
fresh account read back through usage_argv's sacct, and the budget backstop refusing or holding
jobs that alice submits directly with sbatch."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator

import pytest

from slurm.association_limits import BudgetLock, apply_budget_locks, read_budget_locks
from slurm.command_runner import SubprocessCommandRunner
from slurm.usage_records import USAGE_ENV_OVERRIDES, UsageRecord, parse_usage_records, usage_argv
from tests.integration.slurm_cluster import SHARED_TEST_ROOT, ensure_account, queue_state, run_command

pytestmark = [pytest.mark.integration, pytest.mark.slurm]

WORK_DIR = SHARED_TEST_ROOT / "usage_sacct"


@pytest.fixture
def account() -> Iterator[str]:
    """A fresh account with alice; afterwards its jobs are cancelled, its locks cleared, it is removed."""
    name = f"sgw_h1_use_{uuid.uuid4().hex[:8]}"
    ensure_account(name, ["alice"])
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    WORK_DIR.chmod(0o777)
    yield name
    run_command(["scancel", f"--account={name}"], check=False)
    apply_budget_locks(SubprocessCommandRunner(timeout_s=60), {name: BudgetLock()})
    run_command(
        ["sacctmgr", "--immediate", "remove", "user", "where", "name=alice", f"account={name}"], check=False
    )
    run_command(["sacctmgr", "--immediate", "remove", "account", "where", f"name={name}"], check=False)


def sbatch(account: str, *args: str, check: bool = True) -> tuple[int, str, str]:
    """Submit as alice directly with sbatch: (exit status, job id, stderr)."""
    result = run_command(
        [
            "runuser",
            "-u",
            "alice",
            "--",
            "sbatch",
            "--parsable",
            f"--account={account}",
            f"--chdir={WORK_DIR}",
            f"--output={WORK_DIR}/%j.out",
            "--mem=100M",
            *args,
        ],
        check=check,
    )
    return result.returncode, result.stdout.strip().split(";")[0], result.stderr


def wait_for_queue_state(job_id: str, state: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while queue_state(job_id) != state:
        assert time.monotonic() < deadline, f"job {job_id} did not become {state} in {timeout} s"
        time.sleep(0.5)


def pending_reason(job_id: str) -> str:
    return run_command(["squeue", "--noheader", "--jobs", job_id, "--format=%T %r"]).stdout.strip()


def usage_of(account: str, since: int) -> list[UsageRecord]:
    """The account's records from exactly usage_argv's command (filtered here, not by sacct)."""
    out = SubprocessCommandRunner(timeout_s=60).run(
        usage_argv(since, int(time.time()) + 60), env={**os.environ, **USAGE_ENV_OVERRIDES}
    )
    return [record for record in parse_usage_records(out) if record.account == account]


def test_records_of_a_real_workload(account: str) -> None:
    since = int(time.time()) - 60
    _, cpu_job, _ = sbatch(account, "--partition=cpu", "--time=2", "--wrap=sleep 1")
    _, gpu_job, _ = sbatch(account, "--partition=gpu", "--gres=gpu:h100:2", "--time=2", "--wrap=sleep 1")
    _, requeued_job, _ = sbatch(account, "--partition=cpu", "--time=2", "--requeue", "--wrap=sleep 4")
    # Pends for good (PartitionTimeLimit) but is eligible, so the window query lists it.
    _, never_started, _ = sbatch(account, "--partition=cpu", "--time=UNLIMITED", "--wrap=true")
    wait_for_queue_state(requeued_job, "RUNNING")
    time.sleep(2)
    run_command(["scontrol", "requeue", requeued_job])
    # A requeued job waits ~2 min (BeginTime) before it may start again; once it pends again
    # its begin time can be moved closer. Not to the same second: slurmd refuses a credential
    # issued in the second its predecessor was revoked ("Job credential revoked", FAILED).
    wait_for_queue_state(requeued_job, "PENDING")
    run_command(["scontrol", "update", f"JobId={requeued_job}", "StartTime=now+2"])
    run_command(["scancel", never_started])

    deadline = time.monotonic() + 60
    while True:
        records = usage_of(account, since)
        runs = [record for record in records if record.job_id_raw == requeued_job]
        if len(records) == 5 and all(record.is_final for record in records) and len(runs) == 2:
            break
        assert time.monotonic() < deadline, f"records not final in time: {records}"
        time.sleep(1)

    by_id = {record.job_id_raw: record for record in records if record.job_id_raw != requeued_job}
    cpu, gpu, cancelled = by_id[cpu_job], by_id[gpu_job], by_id[never_started]
    assert (cpu.state, cpu.partition, cpu.user) == ("COMPLETED", "cpu", "alice")
    assert (cpu.alloc.cpu, cpu.alloc.mem_mb, cpu.alloc.gpu, cpu.alloc.node) == (1, 100, 0, 1)
    assert (gpu.state, gpu.partition, gpu.alloc.gpu) == ("COMPLETED", "gpu", 2)
    assert gpu.elapsed_s >= 1
    assert (cancelled.state, cancelled.start_time, cancelled.elapsed_s, cancelled.alloc.cpu) == (
        "CANCELLED",
        None,
        0,
        0,
    )
    assert cancelled.time_limit_s is None

    first, second = sorted(runs, key=lambda run: run.submit_time)
    assert (first.state, second.state) == ("REQUEUED", "COMPLETED")
    assert first.submit_time < second.submit_time
    assert first.identity != second.identity
    assert first.start_time is not None and second.start_time is not None
    assert first.end_time is not None and first.end_time <= second.start_time
    assert 1 <= first.elapsed_s < 4
    assert second.elapsed_s >= 4


def test_budget_locks_hold_or_refuse_direct_sbatch(account: str) -> None:
    runner = SubprocessCommandRunner(timeout_s=60)
    assert read_budget_locks(runner, [account]) == {account: BudgetLock()}

    assert apply_budget_locks(runner, {account: BudgetLock(all=True)})
    assert read_budget_locks(runner, [account]) == {account: BudgetLock(all=True)}
    returncode, _, stderr = sbatch(account, "--partition=cpu", "--time=1", "--wrap=true", check=False)
    assert returncode != 0
    assert "AssocGrpSubmitJobsLimit" in stderr
    assert apply_budget_locks(runner, {account: BudgetLock(all=True)}) == []

    assert apply_budget_locks(runner, {account: BudgetLock(gpu=True)})
    _, gpu_job, _ = sbatch(account, "--partition=gpu", "--gres=gpu:h100:1", "--time=1", "--wrap=sleep 1")
    _, cpu_job, _ = sbatch(account, "--partition=cpu", "--time=1", "--wrap=sleep 1")
    wait_for_queue_state(cpu_job, "RUNNING")
    assert pending_reason(gpu_job) == "PENDING AssocGrpGRESRunMinutes"
    assert apply_budget_locks(runner, {account: BudgetLock(gpu=True)}) == []

    assert apply_budget_locks(runner, {account: BudgetLock()}) == [
        [
            "sacctmgr",
            "--immediate",
            "modify",
            "account",
            "where",
            f"name={account}",
            "set",
            "GrpTRESRunMins=gres/gpu=-1",
        ]
    ]
    assert read_budget_locks(runner, [account]) == {account: BudgetLock()}
    wait_for_queue_state(gpu_job, "RUNNING", timeout=60)
    returncode, _, _ = sbatch(account, "--partition=cpu", "--time=1", "--wrap=true")
    assert returncode == 0
