"""Parse ``sacctmgr --noheader --parsable2 show ...`` output (accounts, QOS, associations)."""

from __future__ import annotations

from dataclasses import dataclass

from slurm.errors import SlurmOutputError

ACCOUNT_FORMAT = "account,description"
QOS_FORMAT = "name"
ASSOCIATION_FORMAT = "account,user,partition,qos,defaultqos"
USER_FORMAT = "user,defaultaccount"


@dataclass(frozen=True, slots=True)
class AssociationRow:
    """One association: the account's own (``user`` is "") or one user's in that account."""

    account: str
    user: str
    partition: str
    qos: frozenset[str]
    default_qos: str | None


def parse_qos_names(text: str) -> frozenset[str]:
    """QOS names from ``show qos format=QOS_FORMAT``."""
    return frozenset(line.strip() for line in text.splitlines() if line.strip())


def parse_account_descriptions(text: str) -> dict[str, str]:
    """Account name -> description from ``show account format=ACCOUNT_FORMAT``.

    The description is the last field and free text, so it keeps any ``|`` it contains.
    """
    accounts = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        name, separator, description = line.partition("|")
        if not separator or not name:
            raise SlurmOutputError("unexpected sacctmgr account line")
        accounts[name] = description
    return accounts


def parse_associations(text: str) -> list[AssociationRow]:
    """Associations from ``show associations format=ASSOCIATION_FORMAT``."""
    rows = []
    for line in text.splitlines():
        if not line.strip():
            continue
        values = line.split("|")
        if len(values) != ASSOCIATION_FORMAT.count(",") + 1 or not values[0]:
            raise SlurmOutputError(f"unexpected sacctmgr association line with {len(values)} fields")
        account, user, partition, qos, default_qos = values
        rows.append(
            AssociationRow(
                account=account,
                user=user,
                partition=partition,
                qos=frozenset(name for name in qos.split(",") if name),
                default_qos=default_qos or None,
            )
        )
    return rows


def parse_default_accounts(text: str) -> dict[str, str]:
    """User -> default account from ``show user format=USER_FORMAT``."""
    defaults = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        user, separator, account = line.partition("|")
        if not separator or not user or "|" in account:
            raise SlurmOutputError("unexpected sacctmgr user line")
        defaults[user] = account
    return defaults
