"""The generated step wrapper on the real cluster: outputs, manifests, chains, arrays, heartbeats, USR2.

Every job goes through CliSlurmDriver as alice, in a working directory under SHARED_TEST_ROOT.
All of them are submitted together by one fixture, so the file takes about as long as its
slowest job (the USR2 one, which waits for Slurm's time-limit warning). The tests that watch a
job while it runs (array, heartbeat) come first, while their jobs still run.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from slurm import job_layout
from slurm.account_provisioning import SlurmAccountSpec, provision_account
from slurm.batch_job import BatchJob
from slurm.cli_driver import CliSlurmDriver
from slurm.command_runner import SubprocessCommandRunner
from slurm.observations import JobObservation
from tests.integration.slurm_cluster import SHARED_TEST_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slurm]

ACCOUNT = "sgw_step_wrap"
WRITE_OUTPUTS = """
mkdir -p "$SGW_OUTPUT_DIR/sub dir"
printf 'weights %s' "$SLURM_JOB_ID" > "$SGW_OUTPUT_DIR/model.bin"
head -c 100000 /dev/urandom > "$SGW_OUTPUT_DIR/sub dir/blob"
ln -s model.bin "$SGW_OUTPUT_DIR/link"
"""
PREPARE = 'sleep 4\necho "prepared by $SLURM_JOB_ID" > "$SGW_OUTPUT_DIR/data.txt"\n'
TRAIN = 'cp "$SGW_OUTPUTS_DIR/prepare/data.txt" "$SGW_OUTPUT_DIR/copy.txt"\n'
# Task t ends 3 t seconds after task 0, so the test can look while only some have finished.
ARRAY_TASK = (
    'sleep $(( 1 + 3 * SLURM_ARRAY_TASK_ID ))\necho "$SLURM_ARRAY_TASK_ID" > "$SGW_OUTPUT_DIR/result"\n'
)
# Ready once its USR2 handler is in place; on USR2 it writes a marker and ends successfully.
CHECKPOINT_ON_USR2 = """
trap 'echo "checkpointed after $SECONDS s" > "$SGW_OUTPUT_DIR/marker"; kill "$sleeper"; exit 0' USR2
sleep 300 & sleeper=$!
wait "$sleeper"
"""


class Submitted(NamedTuple):
    driver: CliSlurmDriver
    jobs: dict[str, BatchJob]
    ids: dict[str, str]


def make_job(workdir: Path, step: str, **changes: object) -> BatchJob:
    values: dict[str, object] = {
        "gateway_job_id": f"sgw_stepw-{uuid.uuid4().hex[:10]}",
        "name": f"sgw_stepw_{step}",
        "unix_user": "alice",
        "account": ACCOUNT,
        "partition": "cpu",
        "working_dir": str(workdir),
        "time_limit_minutes": 3,
        "step_name": step,
    }
    return BatchJob(**{**values, **changes})


@pytest.fixture(scope="module")
def submitted() -> Iterator[Submitted]:
    runner = SubprocessCommandRunner(timeout_s=60)
    provision_account(
        runner, SlurmAccountSpec(account=ACCOUNT, qos=("normal",), default_qos=None, users=("alice",))
    )
    driver = CliSlurmDriver(runner)
    root = SHARED_TEST_ROOT / f"step_wrapper_{uuid.uuid4().hex[:10]}"
    jobs = {
        "writes": make_job(root / "writes", "write", command=None, script=WRITE_OUTPUTS),
        "fails": make_job(
            root / "fails", "fail", command=None, script='echo partial > "$SGW_OUTPUT_DIR/part"\nexit 3\n'
        ),
        "prepare": make_job(root / "chain", "prepare", command=None, script=PREPARE),
        "array": make_job(root / "array", "sweep", array="0-3", command=None, script=ARRAY_TASK),
        "heartbeat": make_job(root / "beat", "beat", heartbeat_interval_s=1, command=("sleep", "20")),
        "usr2": make_job(
            root / "usr2",
            "usr2",
            time_limit_minutes=1,
            signal_before_limit_s=55,
            command=None,
            script=CHECKPOINT_ON_USR2,
        ),
    }
    ids = {key: driver.submit(job) for key, job in jobs.items()}
    # The second step waits for the first one's Slurm job and reads its published outputs.
    jobs["train"] = make_job(
        root / "chain", "train", dependencies=(ids["prepare"],), command=None, script=TRAIN
    )
    ids["train"] = driver.submit(jobs["train"])
    yield Submitted(driver, jobs, ids)
    for slurm_id in ids.values():
        driver.cancel(slurm_id)
    shutil.rmtree(root, ignore_errors=True)


def wait_until_ended(driver: CliSlurmDriver, slurm_id: str, timeout: float = 100) -> JobObservation:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        observation = driver.poll([slurm_id]).get(slurm_id)
        if observation is not None and observation.is_terminal:
            return observation
        time.sleep(0.5)
    raise AssertionError(f"job {slurm_id} did not end in {timeout} s")


def read_manifest(path: Path) -> dict[str, str]:
    """sha256sum lines ("<hex>  ./path") as {path: hex}, in file order."""
    entries = {}
    for line in path.read_text().splitlines():
        digest, name = line.split("  ", 1)
        entries[name] = digest
    return entries


def attempt_dir(job: BatchJob) -> Path:
    return Path(job_layout.attempt_dir(job.working_dir, job.step_name, job.attempt))


def published(job: BatchJob) -> Path:
    return Path(job_layout.published_link(job.working_dir, job.step_name))


def test_an_array_publishes_once_every_task_has_written_its_manifest(submitted: Submitted) -> None:
    job = submitted.jobs["array"]
    directory = attempt_dir(job)
    last_manifest = directory / job_layout.ARRAY_MANIFEST_PATTERN.format(task=3)
    seen_partial = False
    deadline = time.monotonic() + 100
    while not last_manifest.exists():
        # Read the link before the last manifest: if that is still missing, so was it then.
        link_there = published(job).is_symlink()
        if not last_manifest.exists() and len(list(directory.glob("manifest.*.sha256"))) > 0:
            seen_partial = True
            assert not link_there, "published before every task had finished"
        assert time.monotonic() < deadline, "the array's last task never finished"
        time.sleep(0.2)
    assert seen_partial, "never saw the array with only some tasks finished"
    final = wait_until_ended(submitted.driver, submitted.ids["array"])
    assert final.state == "COMPLETED"
    assert sorted(p.name for p in directory.glob("manifest.*.sha256")) == [
        f"manifest.{task}.sha256" for task in range(4)
    ]
    for task in range(4):
        manifest = read_manifest(directory / f"manifest.{task}.sha256")
        assert list(manifest) == [f"./{task}/result"]
        assert hashlib.sha256(f"{task}\n".encode()).hexdigest() == manifest[f"./{task}/result"]
    assert os.readlink(published(job)) == job_layout.published_link_target(job.step_name, 1)
    assert sorted(p.name for p in published(job).parent.iterdir()) == [job.step_name]


def test_the_heartbeat_advances_while_the_job_runs(submitted: Submitted) -> None:
    job = submitted.jobs["heartbeat"]
    beat = Path(job_layout.heartbeat_file(job.working_dir, job.step_name, job.attempt))
    seen: set[int] = set()
    deadline = time.monotonic() + 100
    while time.monotonic() < deadline:
        if beat.exists():
            seen.add(beat.stat().st_mtime_ns)
        observation = submitted.driver.poll([submitted.ids["heartbeat"]]).get(submitted.ids["heartbeat"])
        if observation is not None and observation.is_terminal:
            break
        time.sleep(0.3)
    assert observation is not None and observation.state == "COMPLETED"
    assert len(seen) >= 4, f"only {len(seen)} distinct heartbeat times"


def test_a_completed_job_records_and_publishes_its_outputs(submitted: Submitted) -> None:
    job = submitted.jobs["writes"]
    final = wait_until_ended(submitted.driver, submitted.ids["writes"])
    assert (final.state, final.exit_code) == ("COMPLETED", 0)
    out = attempt_dir(job) / "out"
    manifest = read_manifest(attempt_dir(job) / job_layout.MANIFEST_NAME)
    assert list(manifest) == ["./model.bin", "./sub dir/blob"]  # sorted, the symlink skipped
    for name, digest in manifest.items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest
    link = published(job)
    assert os.readlink(link) == job_layout.published_link_target(job.step_name, 1)
    assert link.resolve() == out.resolve()
    assert (link / "model.bin").read_text() == f"weights {submitted.ids['writes']}"


def test_a_failed_job_publishes_nothing(submitted: Submitted) -> None:
    job = submitted.jobs["fails"]
    final = wait_until_ended(submitted.driver, submitted.ids["fails"])
    assert (final.state, final.exit_code) == ("FAILED", 3)
    assert (attempt_dir(job) / "out" / "part").read_text() == "partial\n"
    assert not (attempt_dir(job) / job_layout.MANIFEST_NAME).exists()
    assert not published(job).is_symlink()


def test_a_chained_step_starts_after_the_first_and_reads_its_outputs(submitted: Submitted) -> None:
    first = wait_until_ended(submitted.driver, submitted.ids["prepare"])
    second = wait_until_ended(submitted.driver, submitted.ids["train"])
    assert (first.state, second.state) == ("COMPLETED", "COMPLETED")
    assert first.end_time is not None and second.start_time is not None
    assert second.start_time >= first.end_time
    copied = published(submitted.jobs["train"]) / "copy.txt"
    assert copied.read_text() == f"prepared by {submitted.ids['prepare']}\n"
    assert sorted(p.name for p in copied.parent.parent.iterdir()) == ["prepare", "train"]


def test_usr2_before_the_time_limit_reaches_the_program(submitted: Submitted) -> None:
    job = submitted.jobs["usr2"]
    final = wait_until_ended(submitted.driver, submitted.ids["usr2"], timeout=120)
    assert (final.state, final.exit_code) == ("COMPLETED", 0)
    assert (published(job) / "marker").read_text().startswith("checkpointed after ")
