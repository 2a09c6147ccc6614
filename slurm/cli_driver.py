"""SlurmDriver over Slurm's client commands (sbatch, squeue, sacct, scancel, sinfo), run as root.

Every call is one batched command per question (one squeue, one sacct), run with a minimal
environment and ``TZ=UTC SLURM_TIME_FORMAT=%s`` so times parse as epoch seconds.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence

import msgspec

from slurm.array_summary import summarize_array
from slurm.batch_job import BatchJob
from slurm.batch_script import build_sbatch_argv, render_batch_script, sbatch_environment
from slurm.command_runner import CommandFailed, CommandRunner
from slurm.errors import SlurmOutputError
from slurm.observations import TERMINAL_STATES, JobObservation, PartitionCapacity
from slurm.partition_fabrics import PartitionFabrics
from slurm.sacct_parser import SACCT_FORMAT, AccountingRow, accounting_observation, parse_sacct
from slurm.sbatch_errors import classify_sbatch_failure
from slurm.sinfo_parser import SINFO_NODE_FORMAT, parse_sinfo_nodes, partition_capacities
from slurm.squeue_parser import (
    PENDING_PARTITIONS_FORMAT,
    SQUEUE_FORMAT,
    QueueRow,
    count_pending_by_partition,
    parse_squeue,
    queue_observation,
)
from slurm.working_dirs import prepare_working_dir

# The ids the gateway ever passes: a job ("123") or an array task ("123_4").
_JOB_ID = re.compile(r"^[0-9]+(_[0-9]+)?$")
_PARSABLE_OUTPUT = re.compile(r"^(?P<id>[0-9]+)(;\S+)?$")
_TEST_ONLY_ESTIMATE = re.compile(r"Job \d+ to start at (?P<start>\d+) using ")
# slurm_strerror texts meaning "nothing to do" for squeue --jobs and scancel.
_UNKNOWN_JOB = "Invalid job id specified"
_ALREADY_ENDED = "Job/step already completing or completed"


class CliSlurmDriver:
    """The default SlurmDriver: Slurm's CLI on a host that shares the job directories."""

    def __init__(
        self,
        runner: CommandRunner,
        *,
        accounting_lookback_days: int = 7,
        environ: Mapping[str, str] | None = None,
        fabrics: PartitionFabrics | None = None,
    ) -> None:
        """``accounting_lookback_days`` bounds how far back find_submitted searches sacct;
        ``environ`` is where sbatch's few environment variables come from (default: os.environ);
        ``fabrics`` gives each job its partition's fabric settings.
        """
        self._runner = runner
        self._fabrics = fabrics
        self._lookback_days = accounting_lookback_days
        self._sbatch_env = sbatch_environment(os.environ if environ is None else environ)
        self._query_env = {**self._sbatch_env, "TZ": "UTC", "SLURM_TIME_FORMAT": "%s"}

    def submit(self, job: BatchJob) -> str:
        """Create the working directory, run sbatch with the script on stdin, return the job id.

        Raises JobSpecError for an unsafe job, SlurmRejected when Slurm refuses it (with the
        field at fault) and SlurmUnavailable when Slurm cannot be reached.
        """
        if self._fabrics is not None:
            job = self._fabrics.apply(job)
        argv = build_sbatch_argv(job)
        script = render_batch_script(job)
        prepare_working_dir(job)
        # Not the query environment: SLURM_* variables reach the job even with --export=NONE.
        try:
            output = self._runner.run(argv, stdin=script, env=self._sbatch_env)
        except CommandFailed as exc:
            raise classify_sbatch_failure(exc.stderr) from exc
        return parse_sbatch_parsable(output)

    def estimate_start(self, job: BatchJob) -> int | None:
        """When Slurm would start ``job`` now (epoch seconds), from ``sbatch --test-only``.

        Nothing is submitted and no directory is created. None when Slurm gives no estimate;
        refusals raise SlurmRejected exactly as ``submit`` would.
        """
        if self._fabrics is not None:
            job = self._fabrics.apply(job)
        argv = ["--test-only" if arg == "--parsable" else arg for arg in build_sbatch_argv(job)]
        script = render_batch_script(job)
        try:
            output = self._runner.capture(argv, stdin=script, env=self._query_env)
        except CommandFailed as exc:
            raise classify_sbatch_failure(exc.stderr) from exc
        return parse_test_only_start(output.stderr)

    def find_submitted(self, gateway_job_ids: Sequence[str]) -> dict[str, str]:
        """Slurm job ids (as sbatch printed them) of jobs whose comment is ``sgw:<gateway id>``.

        Looks at everything slurmctld still holds (squeue) and at the accounting records of the
        last ``accounting_lookback_days`` days (sacct). If one gateway id was submitted more
        than once, the most recently submitted job wins.
        """
        wanted = set(gateway_job_ids)
        if not wanted:
            return {}
        queued = parse_squeue(
            self._query(["squeue", "--all", "--noheader", "--states=all", f"--format={SQUEUE_FORMAT}"])
        )
        accounted = parse_sacct(
            self._query(
                [
                    "sacct",
                    "--allusers",
                    "--duplicates",
                    "--allocations",
                    "--noheader",
                    "--parsable2",
                    f"--starttime=now-{self._lookback_days}days",
                    "--endtime=now",
                    f"--format={SACCT_FORMAT}",
                ]
            )
        )
        newest: dict[str, tuple[int, int, str]] = {}
        for row in (*queued, *accounted):
            gateway_id = row.gateway_job_id
            if gateway_id not in wanted:
                continue
            candidate = (row.submit_time or 0, int(row.parent_job_id), row.parent_job_id)
            if gateway_id not in newest or candidate > newest[gateway_id]:
                newest[gateway_id] = candidate
        return {gateway_id: slurm_id for gateway_id, (_, _, slurm_id) in newest.items()}

    def poll(self, slurm_job_ids: Sequence[str]) -> dict[str, JobObservation]:
        """One squeue call for all ids, then one sacct call for those squeue cannot settle.

        Keys are Slurm's ids: the requested ones plus, for an array, each task ("123_4", one
        per index of a pending range); a requested array id gets an observation summarising its
        tasks, with every task in ``array_tasks``. A task squeue no longer shows but sacct does
        appears once, with sacct's data. A job Slurm reports as ended is returned as COMPLETING
        until its accounting record is complete (exit code, full node list), so a terminal
        observation is always final. Unknown ids are absent.
        """
        requested = _checked_job_ids(slurm_job_ids)
        if not requested:
            return {}
        queued = self._squeue_jobs(requested)
        unsettled = unsettled_job_ids(requested, queued)
        accounted = self._sacct_jobs(unsettled) if unsettled else []
        return poll_observations(requested, queued, accounted)

    def cancel(self, slurm_job_id: str) -> None:
        """``scancel`` the job; a job that already ended or that Slurm forgot is not an error."""
        (job_id,) = _checked_job_ids([slurm_job_id])
        try:
            self._query(["scancel", job_id])
        except CommandFailed as exc:
            if _UNKNOWN_JOB in exc.stderr or _ALREADY_ENDED in exc.stderr:
                return
            raise

    def partitions(self) -> list[PartitionCapacity]:
        """Nodes and GPUs per partition (sinfo, per node) with pending jobs (squeue, per task)."""
        nodes = parse_sinfo_nodes(
            self._query(["sinfo", "--all", "--Node", "--noheader", f"--Format={SINFO_NODE_FORMAT}"])
        )
        pending = count_pending_by_partition(
            self._query(
                [
                    "squeue",
                    "--all",
                    "--noheader",
                    "--array",
                    "--states=PENDING",
                    f"--format={PENDING_PARTITIONS_FORMAT}",
                ]
            )
        )
        return partition_capacities(nodes, pending)

    def _squeue_jobs(self, job_ids: Sequence[str]) -> list[QueueRow]:
        argv = [
            "squeue",
            "--all",
            "--noheader",
            "--array",
            "--states=all",
            f"--jobs={','.join(job_ids)}",
            f"--format={SQUEUE_FORMAT}",
        ]
        try:
            return parse_squeue(self._query(argv))
        except CommandFailed as exc:
            # squeue refuses a --jobs list in which it knows no job at all.
            if _UNKNOWN_JOB in exc.stderr:
                return []
            raise

    def _sacct_jobs(self, job_ids: Sequence[str]) -> list[AccountingRow]:
        return parse_sacct(
            self._query(
                [
                    "sacct",
                    "--allusers",
                    "--allocations",
                    "--noheader",
                    "--parsable2",
                    f"--jobs={','.join(job_ids)}",
                    f"--format={SACCT_FORMAT}",
                ]
            )
        )

    def _query(self, argv: list[str]) -> str:
        return self._runner.run(argv, env=self._query_env)


def parse_sbatch_parsable(output: str) -> str:
    """The job id from ``sbatch --parsable`` output (``<id>`` or ``<id>;<cluster>``)."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    match = _PARSABLE_OUTPUT.match(lines[-1]) if lines else None
    if match is None:
        raise SlurmOutputError("sbatch --parsable printed no job id")
    return match["id"]


def parse_test_only_start(stderr: str) -> int | None:
    """The start estimate in ``sbatch --test-only``'s "Job N to start at <epoch> using ..."."""
    match = _TEST_ONLY_ESTIMATE.search(stderr)
    return int(match["start"]) if match else None


def unsettled_job_ids(requested: Sequence[str], queued: Sequence[QueueRow]) -> list[str]:
    """The requested ids squeue alone cannot answer for, to look up in sacct: all but the jobs
    and tasks it shows that have not ended.

    An array id always needs sacct (squeue shows only its tasks): slurmctld forgets each ended
    task after MinJobAge while the others still pend or run, and then only sacct knows it.
    """
    live = {key for row in queued if row.state not in TERMINAL_STATES for key in row.task_keys}
    return [job_id for job_id in requested if job_id not in live]


def poll_observations(
    requested: Sequence[str], queued: Sequence[QueueRow], accounted: Sequence[AccountingRow]
) -> dict[str, JobObservation]:
    """The result of ``CliSlurmDriver.poll`` from its squeue rows and sacct records.

    squeue answers for what has not ended; sacct for the rest, or COMPLETING while its record
    is incomplete or missing. Each task of a range row ("123_[5-9%2]") is its own key.
    """
    queue_rows = {key: row for row in queued for key in row.task_keys}
    observations = {
        key: _keyed(queue_observation(row), key)
        for key, row in queue_rows.items()
        if row.state not in TERMINAL_STATES
    }
    for record in accounted:
        for key in record.task_keys:
            if key not in observations:
                observations[key] = _keyed(_accounting_or_queue(record, queue_rows.get(key)), key)
    for key, row in queue_rows.items():
        # Ended in slurmctld but slurmdbd has no record yet: not final until it has.
        if key not in observations:
            observations[key] = _still_completing(_keyed(queue_observation(row), key))
    for job_id in requested:
        tasks = [obs for key, obs in observations.items() if key.startswith(f"{job_id}_")]
        # Replaces any row of its own: while an array ends, sacct can briefly list its last
        # task (whose raw id is the array id) as a plain job with the array id.
        if tasks:
            observations[job_id] = summarize_array(job_id, tasks)
    return observations


def _checked_job_ids(job_ids: Iterable[str]) -> list[str]:
    checked = list(dict.fromkeys(job_ids))
    for job_id in checked:
        if not _JOB_ID.match(job_id):
            raise ValueError(f"not a Slurm job id: {job_id[:30]!r}")
    return checked


def _keyed(observation: JobObservation, key: str) -> JobObservation:
    """``observation`` under ``key`` (one task of a pending range shares the range's row)."""
    if observation.slurm_job_id == key:
        return observation
    return msgspec.structs.replace(observation, slurm_job_id=key)


def _accounting_or_queue(row: AccountingRow, queued: QueueRow | None) -> JobObservation:
    observation = accounting_observation(row)
    if queued is None or observation.is_terminal:
        return observation
    # slurmctld says the job ended and slurmdbd has not caught up: squeue still has the full
    # node list, and the job is not final until its record is.
    return _still_completing(queue_observation(queued))


def _still_completing(observation: JobObservation) -> JobObservation:
    return msgspec.structs.replace(observation, state="COMPLETING", end_time=None)
