"""Many job records in slurmdbd's own database, read back through sacct like real ones.

One real job of a dedicated bench account is run, then its row in ``<cluster>_job_table`` is
cloned N times (distinct ``id_job`` and times, in a window far in the past that no test uses)
with MariaDB's sequence engine, through the ``mysql`` client as root. The clones are deleted
afterwards, even when the benchmark fails. Directly inserted rows never trigger slurmdbd's
re-rollup, so sreport's history stays as it was.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

BENCH_ACCOUNT = "sgw_acct_bench"
BENCH_USER = "alice"
SLURM_CONF = Path("/etc/slurm/slurm.conf")
SLURMDBD_CONF = Path("/etc/slurm/slurmdbd.conf")
# Below Slurm's default MaxJobId (67043328) and far above the dev cluster's own ids.
FIRST_CLONE_JOB_ID = 60_000_000
# Clones are submitted this many seconds apart and run 60-179 s each.
CLONE_SPACING_S = 10
# Columns the clone sets itself; every other column is copied from the template row.
SET_COLUMNS = ("job_db_inx", "id_job", "time_submit", "time_eligible", "time_start", "time_end", "mod_time")
NAME = re.compile(r"^[A-Za-z0-9_]+$")


@dataclass(frozen=True, slots=True)
class ClonedJobs:
    """Where the clones are: their count and the submit-time window [start, end) they fill."""

    count: int
    window_start: int
    window_end: int


def conf_value(path: Path, key: str) -> str:
    """``Key=value`` from a Slurm config file (case-insensitive key)."""
    for line in path.read_text().splitlines():
        name, _, value = line.partition("=")
        if name.strip().lower() == key.lower():
            return value.split("#", 1)[0].strip()
    raise RuntimeError(f"{key} not set in {path}")


def slurmdbd_database() -> str:
    """The MariaDB database of this cluster's slurmdbd (StorageLoc)."""
    return _checked_name(conf_value(SLURMDBD_CONF, "StorageLoc"))


def job_table() -> str:
    """``<cluster>_job_table``, the table sacct reads job allocations from."""
    return f"{_checked_name(conf_value(SLURM_CONF, 'ClusterName'))}_job_table"


def _checked_name(name: str) -> str:
    # Interpolated into SQL: only plain identifiers.
    if not NAME.match(name):
        raise RuntimeError(f"unexpected database or cluster name: {name!r}")
    return name


def mysql(sql: str) -> str:
    """Run SQL in slurmdbd's database with the mysql client as root (unix-socket auth).

    Returns the rows, tab-separated, without a header.
    """
    result = subprocess.run(
        ["mysql", "--batch", "--skip-column-names", f"--database={slurmdbd_database()}", "-e", sql],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"mysql failed: {result.stderr.strip()}")
    return result.stdout


def ensure_bench_account() -> None:
    """The bench account with the bench user's association (idempotent)."""
    existing = subprocess.run(
        [
            "sacctmgr",
            "--noheader",
            "--parsable2",
            "show",
            "associations",
            "where",
            f"account={BENCH_ACCOUNT}",
            "format=Account,User",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    if f"{BENCH_ACCOUNT}|{BENCH_USER}" in existing.splitlines():
        return
    subprocess.run(["sacctmgr", "-i", "add", "account", BENCH_ACCOUNT], capture_output=True, check=False)
    subprocess.run(
        ["sacctmgr", "-i", "add", "user", BENCH_USER, f"account={BENCH_ACCOUNT}"],
        capture_output=True,
        check=True,
    )


def run_template_job(timeout_s: float = 120) -> int:
    """Run one tiny job in the bench account; its ``job_db_inx`` once slurmdbd has it complete."""
    submitted = subprocess.run(
        [
            "sbatch",
            "--parsable",
            f"--account={BENCH_ACCOUNT}",
            f"--uid={BENCH_USER}",
            f"--gid={BENCH_USER}",
            "--partition=cpu",
            "--time=1",
            "--chdir=/var/tmp",
            "--output=/dev/null",
            "--job-name=sgw-bench-template",
            "--wrap=true",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    job_id = int(submitted.stdout.strip().split(";")[0])
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        # slurmdbd may first write a partial row (no account, user or partition) and complete it
        # later: only a row with all of them is a template.
        row = mysql(
            f"SELECT job_db_inx FROM {job_table()} WHERE id_job = {job_id} AND time_end > 0 "
            f"AND account = '{BENCH_ACCOUNT}' AND id_user > 0 AND `partition` <> '' AND timelimit > 0"
        ).split()
        if row:
            return int(row[0])
        time.sleep(0.5)
    raise RuntimeError(f"template job {job_id} did not complete within {timeout_s} s")


def delete_clones(window_start: int, window_end: int) -> int:
    """Remove the clones (their job ids, submitted in the window); returns how many went."""
    out = mysql(
        f"DELETE FROM {job_table()} WHERE id_job > {FIRST_CLONE_JOB_ID} "
        f"AND time_submit >= {window_start} AND time_submit < {window_end}; SELECT ROW_COUNT();"
    )
    return int(out.split()[-1])


@contextmanager
def cloned_jobs(template_inx: int, count: int, window_start: int) -> Iterator[ClonedJobs]:
    """``count`` clones of the template row, submitted from ``window_start``; deleted on exit."""
    table = job_table()
    window_end = window_start + (count + 1) * CLONE_SPACING_S
    columns = mysql(
        "SELECT column_name FROM information_schema.columns "
        f"WHERE table_schema = DATABASE() AND table_name = '{table}' ORDER BY ordinal_position"
    ).split()
    copied = [column for column in columns if column not in SET_COLUMNS]
    copied_list = ", ".join(f"t.`{column}`" for column in copied)
    submit = f"{window_start} + s.seq * {CLONE_SPACING_S}"
    delete_clones(window_start, window_end)
    try:
        mysql(
            f"INSERT INTO {table} ({', '.join(f'`{c}`' for c in copied)}, "
            "id_job, time_submit, time_eligible, time_start, time_end, mod_time) "
            f"SELECT {copied_list}, {FIRST_CLONE_JOB_ID} + s.seq, {submit}, {submit}, {submit} + 1, "
            f"{submit} + 61 + s.seq % 120, {submit} + 200 "
            f"FROM {table} t JOIN seq_1_to_{int(count)} s WHERE t.job_db_inx = {int(template_inx)}"
        )
        yield ClonedJobs(count=count, window_start=window_start, window_end=window_end + 200)
    finally:
        delete_clones(window_start, window_end)
