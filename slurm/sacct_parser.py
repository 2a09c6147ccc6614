"""Parse ``sacct --parsable2`` output (the driver's own ``--format``) into accounting rows.

Run with ``TZ=UTC SLURM_TIME_FORMAT=%s`` so every time is epoch seconds. Comment is the last
field and the only free text (other users' comments may contain ``|``), so a row is split at
most ``len(fields) - 1`` times and the comment keeps whatever is left.
"""

from __future__ import annotations

from dataclasses import dataclass

from slurm.array_summary import task_keys
from slurm.errors import SlurmOutputError
from slurm.hostlist import count_hosts
from slurm.observations import TERMINAL_STATES, JobObservation
from slurm.slurm_values import base_state, epoch_or_none, text_or_none
from slurm.squeue_parser import gateway_job_id_from_comment

SACCT_FIELDS = (
    "JobIDRaw",
    "JobID",
    "State",
    "ExitCode",
    "Reason",
    "Submit",
    "Start",
    "End",
    "NNodes",
    "NodeList",
    "Comment",
)
SACCT_FORMAT = ",".join(SACCT_FIELDS)


@dataclass(frozen=True, slots=True)
class AccountingRow:
    """One job allocation (or array task) as slurmdbd recorded it."""

    # The unique numeric id; for array tasks it differs from job_id ("11" for "10_0").
    raw_job_id: str
    # The id as users see it: "123", "123_4" for an array task, "123_[5-9%2]" for the tasks
    # that have not started yet.
    job_id: str
    state: str
    exit_code: int | None
    signal: int | None
    reason: str | None
    submit_time: int | None
    start_time: int | None
    end_time: int | None
    node_count: int
    node_list: str | None
    comment: str | None

    @property
    def parent_job_id(self) -> str:
        """The id sbatch printed: the array job id for a task, the job id otherwise."""
        return self.job_id.split("_", 1)[0]

    @property
    def task_keys(self) -> list[str]:
        """The ids this record stands for: its job id, or one "123_<index>" per pending task."""
        return task_keys(self.job_id)

    @property
    def gateway_job_id(self) -> str | None:
        """The gateway job id carried in the comment, when the job is one of ours."""
        return gateway_job_id_from_comment(self.comment)

    @property
    def is_complete(self) -> bool:
        """Whether the record is final.

        Right after a short job ends slurmdbd can report it COMPLETED with only its first node
        in NodeList for a few seconds (seen on 22.05); a terminal record only counts once its
        node list covers all of its nodes.
        """
        if self.state not in TERMINAL_STATES:
            return False
        return self.node_list is None or count_hosts(self.node_list) >= self.node_count


def parse_sacct(text: str) -> list[AccountingRow]:
    """Parse ``sacct --noheader --parsable2 --format=SACCT_FORMAT`` output.

    Job steps (``123.batch``) are skipped. Raises SlurmOutputError for a malformed line.
    """
    rows = []
    for line in text.splitlines():
        if not line.strip():
            continue
        values = line.split("|", len(SACCT_FIELDS) - 1)
        if len(values) != len(SACCT_FIELDS) or not values[0]:
            raise SlurmOutputError(f"unexpected sacct line with {len(values)} fields")
        raw_id, job_id, state, exit_code, reason, submit, start, end, nodes, node_list, comment = values
        if "." in raw_id:
            continue
        code, signal = _exit_code(exit_code)
        rows.append(
            AccountingRow(
                raw_job_id=raw_id,
                job_id=job_id,
                state=base_state(state),
                exit_code=code,
                signal=signal,
                reason=text_or_none(reason),
                submit_time=epoch_or_none(submit),
                start_time=epoch_or_none(start),
                end_time=epoch_or_none(end),
                node_count=_node_count(nodes),
                node_list=text_or_none(node_list),
                comment=text_or_none(comment),
            )
        )
    return rows


def accounting_observation(row: AccountingRow) -> JobObservation:
    """The observation of a job from its accounting record.

    A terminal record that is not complete yet (see ``AccountingRow.is_complete``) is reported
    as COMPLETING, so an observation in a terminal state is always final.
    """
    terminal = row.state in TERMINAL_STATES
    provisional = terminal and not row.is_complete
    return JobObservation(
        slurm_job_id=row.job_id,
        state="COMPLETING" if provisional else row.state,
        reason=row.reason,
        exit_code=row.exit_code if terminal and not provisional else None,
        signal=row.signal if terminal and not provisional else None,
        node_list=row.node_list,
        submit_time=row.submit_time,
        start_time=row.start_time,
        end_time=row.end_time if terminal else None,
        gateway_job_id=row.gateway_job_id,
    )


def _exit_code(value: str) -> tuple[int | None, int | None]:
    # "<exit status>:<signal>", e.g. "1:0" for exit 1, "0:9" for SIGKILL.
    code, _, signal = value.partition(":")
    if not code.isdigit() or not signal.isdigit():
        raise SlurmOutputError(f"unexpected sacct exit code {value[:20]!r}")
    return int(code), int(signal) or None


def _node_count(value: str) -> int:
    try:
        return int(value)
    except ValueError as exc:
        raise SlurmOutputError(f"sacct node count is not a number: {value[:20]!r}") from exc
