"""Make one tenant's Slurm account, QOS and user associations match a declared spec.

The current state is read with ``sacctmgr --noheader --parsable2 show``, the difference is
planned by a pure function, and only that difference is applied with ``sacctmgr --immediate``.
Success is never judged from sacctmgr's English messages (it exits 0 after refusing some
changes and 1 after harmless ones such as "Nothing new added"): the state is read again and
must need no further change. Other accounts are never touched.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from slurm.command_runner import CommandFailed, CommandRunner
from slurm.errors import SlurmError
from slurm.job_validation import UNIX_USER_PATTERN
from slurm.sacctmgr_parser import (
    ACCOUNT_FORMAT,
    ASSOCIATION_FORMAT,
    QOS_FORMAT,
    USER_FORMAT,
    AssociationRow,
    parse_account_descriptions,
    parse_associations,
    parse_default_accounts,
    parse_qos_names,
)

_SACCTMGR = ("sacctmgr", "--immediate")
_SHOW = ("sacctmgr", "--noheader", "--parsable2", "show")
# sacctmgr stores account and QOS names in lower case; "=" and "," would split its arguments.
_SLURM_ENTITY_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}", re.ASCII)
# Passed as one "description=..." argument: no quotes (sacctmgr strips them) and no controls.
_DESCRIPTION = re.compile(r"[A-Za-z0-9 _.,:;()/@+-]{1,200}", re.ASCII)
# sacctmgr's value for "no default of its own": inherit the parent association's.
_INHERIT_DEFAULT_QOS = "-1"


class AccountSpecError(SlurmError):
    """A SlurmAccountSpec value that cannot be provisioned; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class ProvisioningIncomplete(SlurmError):
    """After applying the plan, Slurm's state still differs from the spec.

    ``remaining`` is what would still have to run; ``failures`` the one-line summaries of the
    sacctmgr commands that exited non-zero (for logs; the state decides, not these).
    """

    def __init__(self, account: str, remaining: Sequence[Sequence[str]], failures: Sequence[str]) -> None:
        detail = f": {failures[0]}" if failures else ""
        super().__init__(f"account {account}: {len(remaining)} change(s) did not take effect{detail}")
        self.remaining = tuple(tuple(argv) for argv in remaining)
        self.failures = tuple(failures)


@dataclass(frozen=True, slots=True)
class SlurmAccountSpec:
    """What one tenant's Slurm account must look like.

    ``qos`` is the set of allowed QOS (created when missing) for the account and every member;
    ``default_qos`` must be one of them (None: no preference, any inherited default is kept
    while it is allowed, otherwise cleared to inherit); ``users`` are the Unix users with
    an association, any other user association of the account is removed; ``description``
    None leaves the account's description alone.
    """

    account: str
    qos: tuple[str, ...]
    default_qos: str | None
    users: tuple[str, ...]
    description: str | None = None


@dataclass(frozen=True, slots=True)
class AccountState:
    """What Slurm holds now for one account (as read by ``read_account_state``)."""

    account: str
    # None when the account does not exist.
    description: str | None
    existing_qos: frozenset[str]
    associations: tuple[AssociationRow, ...]
    # For the account's users: their default account, and the other accounts they belong to.
    default_accounts: Mapping[str, str] = field(default_factory=dict)
    other_accounts: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ProvisioningReport:
    """The sacctmgr commands that were run to provision ``account`` (none: already right)."""

    account: str
    commands: tuple[tuple[str, ...], ...]

    @property
    def changed(self) -> bool:
        """Whether anything had to change."""
        return bool(self.commands)


def provision_account(runner: CommandRunner, spec: SlurmAccountSpec) -> ProvisioningReport:
    """Apply the difference between Slurm's state and ``spec``; idempotent.

    Raises AccountSpecError for an invalid spec, SlurmUnavailable if sacctmgr cannot read the
    state, and ProvisioningIncomplete if Slurm still differs from the spec afterwards.
    """
    validate_account_spec(spec)
    plan = plan_account_changes(read_account_state(runner, spec.account), spec)
    run_sacctmgr_plan(
        runner,
        plan,
        replan=lambda: plan_account_changes(read_account_state(runner, spec.account), spec),
        account_of=lambda _: spec.account,
    )
    return ProvisioningReport(account=spec.account, commands=tuple(tuple(argv) for argv in plan))


def run_sacctmgr_plan(
    runner: CommandRunner,
    plan: Sequence[Sequence[str]],
    *,
    replan: Callable[[], Sequence[Sequence[str]]],
    account_of: Callable[[Sequence[str]], str],
) -> None:
    """Run the sacctmgr commands of ``plan``, then judge them by planning again from a fresh read.

    sacctmgr's exit status and messages do not say whether a change took effect (it exits 1
    after "Nothing new added"), so a failed command is only noted; ProvisioningIncomplete is
    raised, naming ``account_of`` the first remaining command, when ``replan`` still finds work.
    """
    failures = []
    for argv in plan:
        try:
            runner.run(argv)
        except CommandFailed as exc:
            failures.append(str(exc))
    if plan:
        remaining = replan()
        if remaining:
            raise ProvisioningIncomplete(account_of(remaining[0]), remaining, failures)


def read_account_state(runner: CommandRunner, account: str) -> AccountState:
    """The account's description, the cluster's QOS names and the account's associations."""
    descriptions = parse_account_descriptions(
        runner.run([*_SHOW, "account", "where", f"name={account}", f"format={ACCOUNT_FORMAT}"])
    )
    qos = parse_qos_names(runner.run([*_SHOW, "qos", f"format={QOS_FORMAT}"]))
    associations = parse_associations(
        runner.run([*_SHOW, "associations", "where", f"account={account}", f"format={ASSOCIATION_FORMAT}"])
    )
    mine = tuple(row for row in associations if row.account == account)
    users = ",".join(sorted({row.user for row in mine if row.user}))
    default_accounts: dict[str, str] = {}
    other_accounts: dict[str, tuple[str, ...]] = {}
    if users:
        default_accounts = parse_default_accounts(
            runner.run([*_SHOW, "user", "where", f"name={users}", f"format={USER_FORMAT}"])
        )
        everywhere = parse_associations(
            runner.run([*_SHOW, "associations", "where", f"users={users}", f"format={ASSOCIATION_FORMAT}"])
        )
        for row in everywhere:
            if row.account != account:
                other_accounts[row.user] = tuple(sorted({*other_accounts.get(row.user, ()), row.account}))
    return AccountState(
        account=account,
        description=descriptions.get(account),
        existing_qos=qos,
        associations=mine,
        default_accounts=default_accounts,
        other_accounts=other_accounts,
    )


def plan_account_changes(state: AccountState, spec: SlurmAccountSpec) -> list[list[str]]:
    """The sacctmgr commands (argv lists) that turn ``state`` into ``spec``, in a safe order.

    sacctmgr silently refuses a default QOS that the association (or, for an account, any
    child association) may not use, and a QOS removal that would take away the default; a
    user's ``defaultqos=-1`` means "inherit the account's". So: QOS exist before anything
    names them, former members go first, then every association (account first, its changes
    reach inheriting users) gains the missing QOS, then gets its default, then loses the
    extra QOS; new members come last, when the account is already right.
    """
    validate_account_spec(spec)
    new_qos = sorted(set(spec.qos) - state.existing_qos)
    plan: list[list[str]] = [[*_SACCTMGR, "add", "qos", name] for name in new_qos]
    qos_list = ",".join(sorted(set(spec.qos)))
    defaults = [f"defaultqos={spec.default_qos}"] if spec.default_qos else []
    account_rows = [row for row in state.associations if not row.user]
    user_rows: dict[str, list[AssociationRow]] = {}
    for row in state.associations:
        if row.user:
            user_rows.setdefault(row.user, []).append(row)
    members = set(spec.users)

    if not account_rows:
        description = [f"description={spec.description}"] if spec.description else []
        plan.append([*_SACCTMGR, "add", "account", spec.account, *description, f"qos={qos_list}", *defaults])
    elif spec.description is not None and spec.description.lower() != (state.description or "").lower():
        # sacctmgr stores account descriptions in lower case.
        plan.append(
            [
                *_SACCTMGR,
                "modify",
                "account",
                "where",
                f"name={spec.account}",
                "set",
                f"description={spec.description}",
            ]
        )
    for user in sorted(set(user_rows) - members):
        # sacctmgr refuses to remove a user's default account while they have others.
        others = state.other_accounts.get(user, ())
        if state.default_accounts.get(user) == spec.account and others:
            plan.append(
                [*_SACCTMGR, "modify", "user", "where", f"name={user}", "set", f"defaultaccount={others[0]}"]
            )
        plan.append([*_SACCTMGR, "remove", "user", "where", f"name={user}", f"account={spec.account}"])
    targets = [(["modify", "account", "where", f"name={spec.account}"], account_rows)] if account_rows else []
    targets += [
        (["modify", "user", "where", f"name={user}", f"account={spec.account}"], user_rows[user])
        for user in sorted(set(user_rows) & members)
    ]
    for step in (_missing_qos, _default_qos, _extra_qos):
        for target, rows in targets:
            setting = step(rows, spec)
            if setting is not None:
                plan.append([*_SACCTMGR, *target, "set", setting])
    for user in sorted(members - set(user_rows)):
        plan.append(
            [*_SACCTMGR, "add", "user", user, f"account={spec.account}", f"qos={qos_list}", *defaults]
        )
    return plan


def validate_account_spec(spec: SlurmAccountSpec) -> None:
    """Raise AccountSpecError naming the first field of ``spec`` that cannot be provisioned."""
    if not _SLURM_ENTITY_NAME.fullmatch(spec.account):
        raise AccountSpecError("account", "use 1-64 lower-case letters, digits, '_', '.' or '-'")
    if not spec.qos:
        raise AccountSpecError("qos", "allow at least one QOS")
    for name in spec.qos:
        if not _SLURM_ENTITY_NAME.fullmatch(name):
            raise AccountSpecError(
                "qos", f"{name[:64]!r}: use 1-64 lower-case letters, digits, '_', '.' or '-'"
            )
    if spec.default_qos is not None and spec.default_qos not in spec.qos:
        raise AccountSpecError("default_qos", "must be one of the allowed QOS")
    for user in spec.users:
        if not UNIX_USER_PATTERN.fullmatch(user):
            raise AccountSpecError("users", f"{user[:32]!r} is not a valid Unix user name")
    if spec.description is not None and not _DESCRIPTION.fullmatch(spec.description):
        raise AccountSpecError("description", "use 1-200 letters, digits, spaces and _ . , : ; ( ) / @ + -")


# Each association may have one row per partition; they are changed together.
def _missing_qos(rows: list[AssociationRow], spec: SlurmAccountSpec) -> str | None:
    missing = set(spec.qos) - frozenset.intersection(*(row.qos for row in rows))
    return f"qos+={','.join(sorted(missing))}" if missing else None


def _default_qos(rows: list[AssociationRow], spec: SlurmAccountSpec) -> str | None:
    if spec.default_qos is not None:
        wrong = any(row.default_qos != spec.default_qos for row in rows)
        return f"defaultqos={spec.default_qos}" if wrong else None
    # No preference: an inherited default is fine while it stays allowed.
    disallowed = any(row.default_qos is not None and row.default_qos not in spec.qos for row in rows)
    return f"defaultqos={_INHERIT_DEFAULT_QOS}" if disallowed else None


def _extra_qos(rows: list[AssociationRow], spec: SlurmAccountSpec) -> str | None:
    extra = frozenset.union(*(row.qos for row in rows)) - set(spec.qos)
    return f"qos-={','.join(sorted(extra))}" if extra else None
