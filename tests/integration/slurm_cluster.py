"""Test-side access to the dev cluster through Slurm's own commands (no fakes).

The gateway's driver and parsers live in `slurm/`; these wrappers only let the integration
tests drive and observe the cluster directly, with bounded waits.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from slurm.observations import TERMINAL_STATES

# Directory visible to every emulated node: each slurmd has a private /tmp.
SHARED_TEST_ROOT = Path("/var/tmp/slurm-gateway-tests")


def run_command(
    argv: Sequence[str], *, check: bool = True, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run a Slurm command; with check, fail with its stderr on a non-zero exit."""
    result = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {result.returncode}: {result.stderr.strip()}")
    return result


def submit_batch(args: Sequence[str]) -> str:
    """Submit with sbatch --parsable and return the job id."""
    out = run_command(["sbatch", "--parsable", *args]).stdout.strip()
    return out.split(";")[0]


def job_record(job_id: str, fields: Sequence[str]) -> dict[str, str]:
    """The allocation's sacct record (empty if slurmdbd has not seen the job yet)."""
    out = run_command(
        [
            "sacct",
            "--allusers",
            "--allocations",
            "--noheader",
            "--parsable2",
            "--jobs",
            job_id,
            "--format",
            ",".join(["JobIDRaw", *fields]),
        ]
    ).stdout
    for line in out.splitlines():
        values = line.split("|")
        if values[0] == job_id:
            return dict(zip(fields, values[1:], strict=True))
    return {}


def queue_state(job_id: str) -> str:
    """The job's state as slurmctld sees it now ('' once it left the queue)."""
    return run_command(["squeue", "--noheader", "--jobs", job_id, "--format=%T"], check=False).stdout.strip()


RECORD_FIELDS = ["State", "NodeList", "NNodes", "AllocTRES", "ExitCode", "Account", "User"]


def wait_for_state(
    job_id: str, states: frozenset[str] = TERMINAL_STATES, timeout: float = 120
) -> dict[str, str]:
    """Poll sacct until the job reaches one of `states`; return its record.

    For terminal states it also waits until slurmctld has let go of the job and the record is
    complete: right after a short job ends, slurmdbd can report it COMPLETED with only the
    first node in NodeList for a few seconds (seen on 22.05), so NodeList must cover NNodes.
    """
    terminal = states <= TERMINAL_STATES
    deadline = time.monotonic() + timeout
    record: dict[str, str] = {}
    while time.monotonic() < deadline:
        record = job_record(job_id, RECORD_FIELDS)
        reached = bool(record) and record["State"].split()[0] in states
        if reached and not terminal:
            return record
        if reached and queue_state(job_id) == "" and record_is_complete(record):
            return record
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not reach {sorted(states)} in {timeout} s; last record {record}")


def record_is_complete(record: dict[str, str]) -> bool:
    """Whether the record's NodeList names all NNodes nodes (or the job never got nodes)."""
    if record["NodeList"] in ("", "None assigned"):
        return True
    return len(expand_hostlist(record["NodeList"])) == int(record["NNodes"])


def expand_hostlist(hostlist: str) -> list[str]:
    """Expand a Slurm hostlist expression (gpu[01-02]) with scontrol."""
    return run_command(["scontrol", "show", "hostnames", hostlist]).stdout.split()


def ensure_account(account: str, users: Sequence[str]) -> None:
    """Create a Slurm account and user associations if absent (reads state, applies the difference)."""
    existing = run_command(
        ["sacctmgr", "--noheader", "--parsable2", "show", "associations", f"account={account}", "format=user"]
    ).stdout.split()
    accounts = run_command(
        ["sacctmgr", "--noheader", "--parsable2", "show", "account", "format=account"]
    ).stdout.split()
    if account not in accounts:
        run_command(["sacctmgr", "--immediate", "add", "account", account])
    for user in users:
        if user not in existing:
            run_command(["sacctmgr", "--immediate", "add", "user", user, f"account={account}"])
