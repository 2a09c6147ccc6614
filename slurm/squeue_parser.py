"""Parse ``squeue`` output (the driver's own ``--format``) into queue rows and observations.

Run with ``TZ=UTC SLURM_TIME_FORMAT=%s`` so every time is epoch seconds. The comment is the
last field: it is the only free text (other users' comments may contain ``|``), so a row is
split at most ``len(fields) - 1`` times and the comment keeps whatever is left.
"""

from __future__ import annotations

from dataclasses import dataclass

from slurm.array_summary import task_keys
from slurm.batch_job import GATEWAY_COMMENT_PREFIX
from slurm.errors import SlurmOutputError
from slurm.observations import TERMINAL_STATES, JobObservation
from slurm.slurm_values import base_state, epoch_or_none, text_or_none

# %i job id (array tasks as 123_4; without --array, the not yet split pending tasks as one row
# 123_[5-9%2]), %T state, %r reason,
# %V submit, %S start (the estimate while pending), %e end, %D nodes, %N node list,
# %P partition(s), %k comment.
SQUEUE_FORMAT = "%i|%T|%r|%V|%S|%e|%D|%N|%P|%k"
_FIELD_COUNT = SQUEUE_FORMAT.count("|") + 1


@dataclass(frozen=True, slots=True)
class QueueRow:
    """One line of squeue: a job, an array task, or a range of not yet started tasks."""

    job_id: str
    state: str
    reason: str | None
    submit_time: int | None
    start_time: int | None
    end_time: int | None
    node_count: int
    node_list: str | None
    partitions: tuple[str, ...]
    comment: str | None

    @property
    def parent_job_id(self) -> str:
        """The id sbatch printed: the array job id for a task, the job id otherwise."""
        return self.job_id.split("_", 1)[0]

    @property
    def task_keys(self) -> list[str]:
        """The ids this row stands for: its job id, or one "123_<index>" per task of a range."""
        return task_keys(self.job_id)

    @property
    def gateway_job_id(self) -> str | None:
        """The gateway job id carried in the comment, when the job is one of ours."""
        return gateway_job_id_from_comment(self.comment)


def parse_squeue(text: str) -> list[QueueRow]:
    """Parse ``squeue --noheader --format=SQUEUE_FORMAT`` output.

    Raises SlurmOutputError for a line that does not have the expected shape.
    """
    rows = []
    for line in text.splitlines():
        if not line.strip():
            continue
        values = line.split("|", _FIELD_COUNT - 1)
        if len(values) != _FIELD_COUNT or not values[0]:
            raise SlurmOutputError(f"unexpected squeue line with {len(values)} fields")
        job_id, state, reason, submit, start, end, nodes, node_list, partitions, comment = values
        rows.append(
            QueueRow(
                job_id=job_id,
                state=base_state(state),
                reason=text_or_none(reason),
                submit_time=epoch_or_none(submit),
                start_time=epoch_or_none(start),
                end_time=epoch_or_none(end),
                node_count=_int(nodes, "node count"),
                node_list=text_or_none(node_list),
                partitions=tuple(p for p in partitions.split(",") if p),
                comment=text_or_none(comment),
            )
        )
    return rows


def queue_observation(row: QueueRow) -> JobObservation:
    """The observation of a queued job.

    While a job pends, squeue's start time is Slurm's estimate, so it becomes
    ``expected_start_time``; the end time of a running job is its time limit, not an end, so
    it is only kept once the job has ended.
    """
    pending = row.state == "PENDING"
    return JobObservation(
        slurm_job_id=row.job_id,
        state=row.state,
        reason=row.reason,
        node_list=row.node_list,
        submit_time=row.submit_time,
        start_time=None if pending else row.start_time,
        end_time=row.end_time if row.state in TERMINAL_STATES else None,
        expected_start_time=row.start_time if pending else None,
        gateway_job_id=row.gateway_job_id,
    )


# One line per pending job (per task with --array): the partition(s) it waits for.
PENDING_PARTITIONS_FORMAT = "%P"


def count_pending_by_partition(text: str) -> dict[str, int]:
    """Pending jobs per partition from ``squeue --format=PENDING_PARTITIONS_FORMAT`` output.

    A job waiting for several partitions ("gpu,cpu") counts in each.
    """
    counts: dict[str, int] = {}
    for line in text.splitlines():
        for partition in line.strip().split(","):
            if partition:
                counts[partition] = counts.get(partition, 0) + 1
    return counts


def gateway_job_id_from_comment(comment: str | None) -> str | None:
    """The gateway job id in a ``sgw:<id>`` comment; None for anyone else's comment."""
    if comment is None or not comment.startswith(GATEWAY_COMMENT_PREFIX):
        return None
    return comment.removeprefix(GATEWAY_COMMENT_PREFIX) or None


def _int(value: str, what: str) -> int:
    try:
        return int(value)
    except ValueError as exc:
        raise SlurmOutputError(f"squeue {what} is not a number: {value[:20]!r}") from exc
