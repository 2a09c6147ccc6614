"""The Slurm backstop for budgets: lock an account's association when its budget is spent.

Jobs submitted outside the gateway (a direct ``sbatch -A``) only meet Slurm's own limits, so
an exhausted budget becomes limits on the account's association:

- GPU budget spent: ``GrpTRESRunMins=gres/gpu=0``: GPU jobs stay pending (AssocGrpGRESRunMinutes).
- money budget spent: ``GrpSubmitJobs=0`` (sbatch is refused at submit) and
  ``GrpTRESRunMins=cpu=0`` (jobs already queued cannot start).

Only those ``0`` values are owned here: unlocking sets exactly the locked ones back to ``-1``
(no limit), and a part that is already right is left alone, so other limits an administrator
set on the account survive. As in ``slurm.account_provisioning``, success is judged by reading
the state again, never from sacctmgr's messages.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from slurm.account_provisioning import AccountSpecError, run_sacctmgr_plan
from slurm.command_runner import CommandRunner
from slurm.errors import SlurmOutputError

LIMITS_FORMAT = "Account,User,GrpSubmit,GrpTRESRunMins"
_SACCTMGR = ("sacctmgr", "--immediate")
_SHOW = ("sacctmgr", "--noheader", "--parsable2", "show")
# As slurm.account_provisioning allows: "=" and "," would split sacctmgr's arguments.
_ACCOUNT_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}", re.ASCII)
_LOCKED = "0"
_UNLIMITED = "-1"


@dataclass(frozen=True, slots=True)
class BudgetLock:
    """Which budget locks an account's association carries."""

    # GPU budget exhausted: GrpTRESRunMins=gres/gpu=0 (GPU jobs cannot start).
    gpu: bool = False
    # Money budget exhausted: GrpSubmitJobs=0 (sbatch refused) + GrpTRESRunMins=cpu=0 (nothing starts).
    all: bool = False


@dataclass(frozen=True, slots=True)
class _LockParts:
    """The three limits a BudgetLock consists of, each locked (0) or not."""

    submit: bool
    cpu: bool
    gpu: bool

    @classmethod
    def of(cls, lock: BudgetLock) -> _LockParts:
        return cls(submit=lock.all, cpu=lock.all, gpu=lock.gpu)

    @property
    def lock(self) -> BudgetLock:
        # A half-applied money lock does not count as one (and is completed or cleared).
        return BudgetLock(gpu=self.gpu, all=self.submit and self.cpu)


def read_budget_locks(runner: CommandRunner, accounts: Sequence[str]) -> dict[str, BudgetLock]:
    """The locks on each of ``accounts`` (one sacctmgr call); accounts Slurm lacks are absent."""
    return {account: parts.lock for account, parts in _read_lock_parts(runner, accounts).items()}


def plan_budget_locks(
    current: Mapping[str, BudgetLock], desired: Mapping[str, BudgetLock]
) -> list[list[str]]:
    """The sacctmgr commands (argv lists) that turn ``current`` locks into ``desired`` ones.

    Only accounts present in both and whose lock differs get a command; an account Slurm does
    not have cannot be locked (nor can jobs be submitted to it).
    """
    return _plan({account: _LockParts.of(lock) for account, lock in current.items()}, desired)


def apply_budget_locks(runner: CommandRunner, desired: Mapping[str, BudgetLock]) -> list[list[str]]:
    """Make the accounts' locks match ``desired``; idempotent. Returns the commands run ([]: none).

    Raises SlurmUnavailable if sacctmgr cannot read the state, and ProvisioningIncomplete if
    an account's limits still differ afterwards.
    """
    accounts = sorted(desired)
    plan = _plan(_read_lock_parts(runner, accounts), desired)
    run_sacctmgr_plan(
        runner,
        plan,
        replan=lambda: _plan(_read_lock_parts(runner, accounts), desired),
        account_of=_account_of,
    )
    return plan


def parse_budget_locks(text: str) -> dict[str, BudgetLock]:
    """Account -> its BudgetLock from ``show associations format=LIMITS_FORMAT``.

    Only account-level rows (empty User) count: Grp limits there bind all the account's users.
    """
    return {account: parts.lock for account, parts in _parse_lock_parts(text).items()}


def _parse_lock_parts(text: str) -> dict[str, _LockParts]:
    locks = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        values = line.split("|")
        if len(values) != LIMITS_FORMAT.count(",") + 1 or not values[0]:
            raise SlurmOutputError(f"unexpected sacctmgr limits line with {len(values)} fields")
        account, user, grp_submit, run_mins = values
        if user:
            continue
        tres = _tres_limits(run_mins)
        locks[account] = _LockParts(
            submit=grp_submit == _LOCKED, cpu=tres.get("cpu") == _LOCKED, gpu=tres.get("gres/gpu") == _LOCKED
        )
    return locks


def _read_lock_parts(runner: CommandRunner, accounts: Sequence[str]) -> dict[str, _LockParts]:
    for account in accounts:
        if not _ACCOUNT_NAME.fullmatch(account):
            raise AccountSpecError("account", f"{account[:64]!r}: not a Slurm account name")
    if not accounts:
        return {}
    where = ["where", f"accounts={','.join(accounts)}"]
    text = runner.run([*_SHOW, "associations", *where, f"format={LIMITS_FORMAT}"])
    return {account: parts for account, parts in _parse_lock_parts(text).items() if account in accounts}


def _plan(current: Mapping[str, _LockParts], desired: Mapping[str, BudgetLock]) -> list[list[str]]:
    plan = []
    for account in sorted(desired):
        if account not in current:
            continue
        have, want = current[account], _LockParts.of(desired[account])
        settings = []
        if have.submit != want.submit:
            settings.append(f"GrpSubmitJobs={_value(want.submit)}")
        tres = [
            f"{name}={_value(locked)}"
            for name, locked, now in (("cpu", want.cpu, have.cpu), ("gres/gpu", want.gpu, have.gpu))
            if locked != now
        ]
        if tres:
            settings.append("GrpTRESRunMins=" + ",".join(tres))
        if settings:
            plan.append([*_SACCTMGR, "modify", "account", "where", f"name={account}", "set", *settings])
    return plan


def _value(locked: bool) -> str:
    return _LOCKED if locked else _UNLIMITED


def _tres_limits(text: str) -> dict[str, str]:
    limits = {}
    for item in text.split(",") if text else ():
        name, separator, value = item.partition("=")
        if not separator or not name:
            raise SlurmOutputError(f"unrecognised TRES limit {item[:40]!r}")
        limits[name] = value
    return limits


def _account_of(argv: Sequence[str]) -> str:
    return next(arg.removeprefix("name=") for arg in argv if arg.startswith("name="))
