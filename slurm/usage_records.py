"""Read ``sacct`` for billing: one UsageRecord per job allocation run, with its TRES counts.

The query (``usage_argv``) always passes ``--duplicates`` (without it sacct shows only the last
run of a requeued job and the newest job of a reused id), ``--allocations`` (steps are not
billed separately), ``--allusers`` and ``--noconvert``, and never ``--state`` (with a state
filter sacct selects by a different time window). It runs with ``USAGE_ENV_OVERRIDES`` so
every time is epoch seconds in UTC. A record's identity is (Cluster, JobIDRaw, Submit): each
run of a requeued job is a record of its own with the same JobIDRaw and its own Submit, array
tasks ("123_4") and het-job components ("123+0") have their own JobIDRaw. Only fields without
free text are read, so ``|`` never appears inside a value.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal, InvalidOperation

from slurm.array_summary import task_keys
from slurm.errors import SlurmOutputError
from slurm.observations import TERMINAL_STATES
from slurm.slurm_values import base_state, epoch_or_none, text_or_none, utc_time_argument

USAGE_FIELDS = (
    "Cluster",
    "JobIDRaw",
    "JobID",
    "State",
    "Account",
    "User",
    "Partition",
    "QOS",
    "Submit",
    "Start",
    "End",
    "ElapsedRaw",
    "TimelimitRaw",
    "NNodes",
    "AllocTRES",
    "ReqTRES",
)
USAGE_ENV_OVERRIDES = {"TZ": "UTC", "SLURM_TIME_FORMAT": "%s"}

# A requeued run is over (the job runs again as a new record), so it is billed like an ended job.
# REQUEUED: that run is over (the next is a record of its own); RESIZING: the allocation before a
# resize is over (the resized one is a record of its own, submitted at the resize).
FINAL_STATES = TERMINAL_STATES | {"REQUEUED", "RESIZING"}
# TimelimitRaw (minutes) when the job has no limit of its own.
_SUBMIT_FIELD = USAGE_FIELDS.index("Submit")
_ACCOUNT_FIELD = USAGE_FIELDS.index("Account")
_NO_TIME_LIMIT = frozenset({"UNLIMITED", "Partition_Limit"})
_MEM_UNIT_MB = {"K": Decimal(1) / 1024, "M": Decimal(1), "G": Decimal(1024), "T": Decimal(1024 * 1024)}
_GPU = "gres/gpu"
_TYPED_GPU_PREFIX = "gres/gpu:"


# Every run of every job (--duplicates: requeued runs, reused ids), one record per allocation,
# all users, machine-readable, memory in the unit Slurm stores. Never --state: it changes what
# the window selects.
_SACCT_FOR_BILLING = (
    "sacct",
    "--duplicates",
    "--allocations",
    "--allusers",
    "--parsable2",
    "--noheader",
    "--noconvert",
)


def usage_argv(start: int, end: int) -> list[str]:
    """The sacct command listing every job allocation that existed in [start, end] (epoch s).

    Run it with ``env = {**os.environ, **USAGE_ENV_OVERRIDES}``: the window is written in UTC.
    """
    return [
        *_SACCT_FOR_BILLING,
        "--starttime",
        utc_time_argument(start),
        "--endtime",
        utc_time_argument(end),
        "--format=" + ",".join(USAGE_FIELDS),
    ]


def usage_argv_for_jobs(job_ids: Sequence[str]) -> list[str]:
    """The sacct command listing every run of the jobs ``job_ids`` (JobIDRaw values), whenever.

    With --jobs and no --starttime, sacct searches from the epoch. Same output format as
    ``usage_argv``; run it with the same environment.
    """
    if not job_ids or not all(job_id.isdigit() for job_id in job_ids):
        raise ValueError("job ids must be raw numeric Slurm job ids")
    return [*_SACCT_FOR_BILLING, "--jobs=" + ",".join(job_ids), "--format=" + ",".join(USAGE_FIELDS)]


@dataclass(frozen=True, slots=True)
class TresCounts:
    """Counts of the billed TRES of one allocation (or request); memory in MB."""

    cpu: int = 0
    mem_mb: int = 0
    gpu: int = 0
    node: int = 0


@functools.lru_cache(maxsize=4096)
def parse_tres(text: str) -> TresCounts:
    """TresCounts from a TRES string such as ``billing=2,cpu=2,gres/gpu=1,mem=1000M,node=1``.

    GPUs are counted once: the untyped ``gres/gpu`` when present, else the sum of the typed
    ``gres/gpu:<type>`` entries. Memory in K/M/G/T (no suffix: MB) becomes whole MB, rounded
    up. Other TRES are ignored; an empty string (never allocated) gives zeros. Raises
    SlurmOutputError for a malformed string.
    """
    counts = {"cpu": 0, "mem": 0, "node": 0}
    untyped_gpu: int | None = None
    typed_gpu = 0
    for item in text.split(",") if text else ():
        name, separator, value = item.partition("=")
        if not separator or not name or not value:
            raise SlurmOutputError(f"unrecognised TRES entry {item[:40]!r}")
        if name == "mem":
            counts["mem"] = _megabytes(value)
        elif name in counts:
            counts[name] = _count(name, value)
        elif name == _GPU:
            untyped_gpu = _count(name, value)
        elif name.startswith(_TYPED_GPU_PREFIX):
            typed_gpu += _count(name, value)
    return TresCounts(
        cpu=counts["cpu"],
        mem_mb=counts["mem"],
        gpu=typed_gpu if untyped_gpu is None else untyped_gpu,
        node=counts["node"],
    )


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """One run of one job allocation (or array task, or het-job component) as slurmdbd holds it."""

    cluster: str
    # The unique numeric id; "11" for array task "10_0" and for het component "10+1".
    job_id_raw: str
    # The id as users see it: "123", "123_4", "123+0", or "123_[5-9%2]" for pending tasks.
    job_id: str
    # Slurm's base state word ("CANCELLED by 0" becomes CANCELLED).
    state: str
    account: str
    user: str
    # Several names ("gpu,cpu") while a job submitted to several partitions pends.
    partition: str
    qos: str | None
    submit_time: int
    # None: not started / not ended. A job cancelled while pending can carry Start = End
    # (seen on 22.05); without an allocation (empty AllocTRES) it never started.
    start_time: int | None
    end_time: int | None
    elapsed_s: int
    # None: no limit of its own (UNLIMITED, Partition_Limit).
    time_limit_s: int | None
    node_count: int
    # Zeros when never allocated.
    alloc: TresCounts
    requested: TresCounts
    # 1, or one per task of a pending array remainder ("123_[5-9%2]" stands for 5 tasks).
    tasks: int

    @property
    def identity(self) -> tuple[str, str, int]:
        """What tells runs apart: (cluster, job_id_raw, submit_time)."""
        return (self.cluster, self.job_id_raw, self.submit_time)

    @property
    def is_final(self) -> bool:
        """Whether this run is over and the record can no longer change (REQUEUED included)."""
        return self.state in FINAL_STATES


@dataclass(frozen=True, slots=True)
class UsageLine:
    """One line of ``usage_argv``'s output with only its identity read.

    A reconciler compares most lines with what it stored before and skips the unchanged ones;
    reading three fields instead of the whole record keeps those cheap.
    """

    identity: tuple[str, str, int]
    account: str
    text: str

    def record(self) -> UsageRecord:
        """The whole record; raises SlurmOutputError for a malformed line."""
        return _usage_record(self.text)


def iter_usage_lines(lines: Iterable[str]) -> Iterator[UsageLine]:
    """UsageLines from sacct output lines, one at a time; blank lines are skipped.

    Raises SlurmOutputError when a line's identity (Cluster, JobIDRaw, Submit) cannot be read;
    the rest of the line is checked by ``UsageLine.record``.
    """
    for line in lines:
        stripped = line.rstrip("\r\n")
        if stripped.strip():
            identity, account = _line_identity(stripped)
            yield UsageLine(identity=identity, account=account, text=stripped)


def iter_usage_records(lines: Iterable[str]) -> Iterator[UsageRecord]:
    """UsageRecords from sacct output lines (``usage_argv``'s format), one at a time.

    Blank lines are skipped; a line without exactly ``len(USAGE_FIELDS)`` fields, or with a
    value that cannot be read, raises SlurmOutputError.
    """
    for line in lines:
        stripped = line.rstrip("\r\n")
        if stripped.strip():
            yield _usage_record(stripped)


def parse_usage_records(text: str) -> list[UsageRecord]:
    """Every UsageRecord in the output of ``usage_argv``'s command."""
    return list(iter_usage_records(text.splitlines()))


def _usage_record(line: str) -> UsageRecord:
    values = line.split("|")
    if len(values) != len(USAGE_FIELDS):
        raise SlurmOutputError(f"expected {len(USAGE_FIELDS)} sacct fields, got {len(values)}")
    (
        cluster,
        job_id_raw,
        job_id,
        state,
        account,
        user,
        partition,
        qos,
        submit,
        start,
        end,
        elapsed,
        time_limit,
        node_count,
        alloc_tres,
        req_tres,
    ) = values
    if not job_id_raw.isdigit() or not job_id:
        raise SlurmOutputError(f"unrecognised job id {job_id_raw[:20]!r}/{job_id[:40]!r}")
    submit_time = epoch_or_none(submit)
    if submit_time is None:
        raise SlurmOutputError(f"job {job_id_raw} has no submit time")
    return UsageRecord(
        cluster=cluster,
        job_id_raw=job_id_raw,
        job_id=job_id,
        state=base_state(state),
        account=account,
        user=user,
        partition=partition,
        qos=text_or_none(qos),
        submit_time=submit_time,
        start_time=epoch_or_none(start) if alloc_tres else None,
        end_time=epoch_or_none(end),
        elapsed_s=_count("ElapsedRaw", elapsed),
        time_limit_s=None if time_limit in _NO_TIME_LIMIT else _count("TimelimitRaw", time_limit) * 60,
        node_count=_count("NNodes", node_count),
        alloc=parse_tres(alloc_tres),
        requested=parse_tres(req_tres),
        tasks=len(task_keys(job_id)),
    )


def _line_identity(line: str) -> tuple[tuple[str, str, int], str]:
    values = line.split("|", _SUBMIT_FIELD + 1)
    if len(values) <= _SUBMIT_FIELD + 1:
        raise SlurmOutputError(f"expected {len(USAGE_FIELDS)} sacct fields, got {len(values)}")
    cluster, job_id_raw, submit = values[0], values[1], values[_SUBMIT_FIELD]
    if not job_id_raw.isdigit() or not submit.isdigit():
        raise SlurmOutputError(f"unrecognised job id or submit time {job_id_raw[:20]!r}/{submit[:20]!r}")
    return (cluster, job_id_raw, int(submit)), values[_ACCOUNT_FIELD]


def _count(name: str, value: str) -> int:
    if not value.isdigit():
        raise SlurmOutputError(f"{name}: expected a whole number, got {value[:30]!r}")
    return int(value)


def _megabytes(value: str) -> int:
    unit = value[-1].upper()
    number, factor = (value[:-1], _MEM_UNIT_MB[unit]) if unit in _MEM_UNIT_MB else (value, Decimal(1))
    try:
        amount = Decimal(number) * factor
    except InvalidOperation as exc:
        raise SlurmOutputError(f"unrecognised memory amount {value[:30]!r}") from exc
    if not amount.is_finite() or amount < 0:
        raise SlurmOutputError(f"unrecognised memory amount {value[:30]!r}")
    return int(amount.to_integral_value(rounding=ROUND_CEILING))
