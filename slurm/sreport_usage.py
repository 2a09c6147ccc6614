"""Read ``sreport``'s per account and user TRES usage, to cross-check the ledger against.

slurmdbd rolls usage up once an hour: sreport ends its window at the last full hour it has
rolled up (the current hour reads as nothing yet). Account rows (no user) are totals over the
account's users and sub-accounts; ``root`` is the whole cluster.
"""

from __future__ import annotations

from dataclasses import dataclass

from slurm.errors import SlurmOutputError
from slurm.slurm_values import utc_time_argument

SREPORT_ENV_OVERRIDES = {"TZ": "UTC"}
# Cluster|Account|Login|Proper Name|TRES Name|Used; "Proper Name" is free text (GECOS).
_LEADING_FIELDS = 3
_TRAILING_FIELDS = 2


def sreport_argv(start: int, end: int, tres: str = "cpu,gres/gpu") -> list[str]:
    """The sreport command for usage in seconds per account and user in [start, end) (epoch s).

    Run it with ``env = {**os.environ, **SREPORT_ENV_OVERRIDES}``: the window is written in UTC.
    """
    return [
        "sreport",
        "-P",
        "-n",
        "-t",
        "Seconds",
        f"--tres={tres}",
        "cluster",
        "AccountUtilizationByUser",
        f"start={utc_time_argument(start)}",
        f"end={utc_time_argument(end)}",
    ]


@dataclass(frozen=True, slots=True)
class SreportUsage:
    """One account's (``user`` None) or one user's usage of one TRES, in TRES-seconds."""

    account: str
    user: str | None
    # "cpu" (cpu_seconds) or "gres/gpu" (gpu_seconds), as asked for.
    tres: str
    seconds: int


def parse_sreport_usage(text: str) -> list[SreportUsage]:
    """SreportUsage rows from ``sreport_argv``'s output; SlurmOutputError for anything else.

    The user's proper name is free text and never read: fields are taken from both ends.
    """
    rows = []
    for line in text.splitlines():
        if not line.strip():
            continue
        values = line.split("|")
        if len(values) < _LEADING_FIELDS + _TRAILING_FIELDS + 1:
            raise SlurmOutputError(f"unexpected sreport line with {len(values)} fields")
        _, account, login = values[:_LEADING_FIELDS]
        tres, used = values[-_TRAILING_FIELDS:]
        if not account or not tres or not used.isdigit():
            raise SlurmOutputError(f"unexpected sreport usage for account {account[:64]!r}")
        rows.append(SreportUsage(account=account, user=login or None, tres=tres, seconds=int(used)))
    return rows
