#!/usr/bin/python
"""Ansible module: manage Slurm accounts, QOS and user associations idempotently with sacctmgr."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
---
module: slurm_account
short_description: Manage Slurm accounts, QOS and user associations with sacctmgr
description:
  - Reads the current state with C(sacctmgr --noheader --parsable2 show), compares only the
    fields given, and adds, modifies or removes the account, QOS or user association with
    C(sacctmgr --immediate).
  - Success is judged by reading the state again, never from sacctmgr's exit status or messages
    (sacctmgr exits 1 after harmless messages such as "Nothing new added" and 0 after some refusals).
  - Supports check mode (no modifying command runs; C(commands) lists what would run) and diff mode
    (before and after of the compared fields).
  - Commands run as argument lists, never through a shell; names and values are validated first.
options:
  kind:
    description:
      - What to manage. C(user) is a user association (a user in one account).
    type: str
    required: true
    choices: [account, qos, user]
  name:
    description:
      - The account, QOS or user name.
      - Accounts and QOS take 1-64 lower-case letters, digits, C(_), C(.) or C(-); users take Unix user
        names (lower-case letters, digits, C(_), C(.), C(-); for example C(john.doe)).
    type: str
    required: true
  cluster:
    description:
      - For O(kind=account) or O(kind=user), the cluster of the association (as in C(slurm.conf)'s
        C(ClusterName)). Unset, sacctmgr's own default applies (every cluster on add; all on modify).
      - Only needed where one slurmdbd serves several clusters.
    type: str
  account:
    description:
      - For O(kind=user), the account of the association.
    type: str
  state:
    description:
      - C(present) creates or modifies; C(absent) removes. Removing a user's association with
        their default account first moves their default to another of their accounts.
    type: str
    default: present
    choices: [present, absent]
  description:
    description:
      - For O(kind=account) or O(kind=qos). Compared case-insensitively (sacctmgr stores it in lower case).
    type: str
  parent:
    description:
      - For O(kind=account), the parent account when the account is created (default C(root)).
        An existing account is never moved; a different parent only gives a warning.
    type: str
  qos:
    description:
      - For O(kind=account) or O(kind=user), the exact set of QOS the association may use.
      - Every QOS must exist already (create it with O(kind=qos) first).
    type: list
    elements: str
  default_qos:
    description:
      - For O(kind=account) or O(kind=user), the default QOS.
      - Must be one of O(qos) when both are given, otherwise one the association may already use.
    type: str
  limits:
    description:
      - Limits by sacctmgr field name, for example C(GrpTRES), C(MaxWall), C(MaxTRESPerUser),
        C(GrpSubmitJobs), C(Priority), C(Flags). Only the fields given are read and compared.
      - C(-1) or null clears a limit. A TRES list (C(GrpTRES=gres/gpu=8,cpu=64)) is the exact
        set, TRES it does not name are cleared. Times take Slurm's formats (C(90), C(2-00:00:00));
        C(GraceTime) is in seconds; C(Flags) is a comma-separated string or a list.
      - 'Associations (O(kind=account) or O(kind=user)): GrpJobs, GrpJobsAccrue, GrpSubmitJobs, GrpTRES,
        GrpTRESMins, GrpTRESRunMins, GrpWall, MaxJobs, MaxJobsAccrue, MaxSubmitJobs, MaxTRES,
        MaxTRESPerNode, MaxTRESMins, MaxWall, Priority.'
      - 'QOS: GrpJobs, GrpJobsAccrue, GrpSubmitJobs, GrpTRES, GrpTRESMins, GrpTRESRunMins, GrpWall,
        MaxTRES, MaxTRESPerNode, MaxTRESMins, MaxWall, Priority, MaxTRESPerUser, MaxTRESPerAccount,
        MaxJobsPerUser, MaxJobsPerAccount, MaxSubmitJobsPerUser, MaxSubmitJobsPerAccount, MinTRES,
        Flags, GraceTime, UsageFactor, UsageThreshold.'
    type: dict
notes:
  - Runs on a host where C(sacctmgr) can reach slurmdbd as a Slurm administrator (usually the controller).
  - The module does not create the QOS an account names; give a O(kind=qos) task first.
author:
  - slurm-gateway maintainers
"""

EXAMPLES = r"""
- name: A QOS with GPU limits
  slurm_account:
    kind: qos
    name: gpu_small
    limits:
      GrpTRES: gres/gpu=8
      MaxTRESPerUser: gres/gpu=2
      MaxWall: 2-00:00:00
      GrpSubmitJobs: 100
      Flags: DenyOnLimit

- name: An account that may use it
  slurm_account:
    kind: account
    name: physics
    description: Physics department
    qos: [normal, gpu_small]
    default_qos: normal
    limits:
      GrpTRES: gres/gpu=16

- name: Alice in the account
  slurm_account:
    kind: user
    name: alice
    account: physics

- name: Bob leaves the account
  slurm_account:
    kind: user
    name: bob
    account: physics
    state: absent
"""

RETURN = r"""
changed:
  description: Whether a change was made (in check mode, whether one would be made).
  returned: always
  type: bool
commands:
  description:
    - The sacctmgr argument lists that ran (in check mode, that would run); empty when nothing differs.
  returned: always
  type: list
  elements: list
  sample:
    - ["sacctmgr", "--immediate", "modify", "qos", "where", "name=gpu_small", "set", "MaxWall=2-00:00:00"]
diff:
  description: The compared fields before and after (C(state) is present or absent).
  returned: always
  type: dict
  sample: {"before": {"state": "present", "MaxWall": "1-00:00:00"},
           "after": {"state": "present", "MaxWall": "2-00:00:00"}}
"""

_SHOW = ("sacctmgr", "--noheader", "--parsable2", "show")
_CHANGE = ("sacctmgr", "--immediate")
# sacctmgr stores account and QOS names in lower case; "=" and "," would split its arguments.
_ENTITY_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}", re.ASCII)
_USER_NAME = re.compile(r"[a-z_][a-z0-9_.-]{0,31}", re.ASCII)
# One "description=..." argument: no quotes (sacctmgr strips them), no '=' or '|', no controls.
_DESCRIPTION = re.compile(r"[A-Za-z0-9 _.,:;()/@+-]{1,200}", re.ASCII)
_CLEAR = "-1"

_INT = "int"
_TRES = "tres"
_MINUTES = "minutes"
_SECONDS = "seconds"
_FLOAT = "float"
_FLAGS = "flags"
# One TRES limit: cpu=64, mem=500G, gres/gpu=8, gres/gpu:h100=4, license/matlab=2; -1 clears it.
_TRES_ENTRY = r"[a-z][a-z0-9_]*(/[a-z0-9_.:-]+)?=(-1|[0-9]{1,18}[KMGTP]?)"
_VALUE_PATTERNS = {
    _INT: re.compile(r"[0-9]{1,10}", re.ASCII),
    _TRES: re.compile(rf"{_TRES_ENTRY}(,{_TRES_ENTRY}){{0,30}}", re.ASCII),
    _MINUTES: re.compile(r"([0-9]{1,5}-)?[0-9]{1,6}(:[0-9]{1,2}){0,2}", re.ASCII),
    _SECONDS: re.compile(r"[0-9]{1,9}", re.ASCII),
    _FLOAT: re.compile(r"[0-9]{1,9}(\.[0-9]{1,6})?", re.ASCII),
    _FLAGS: re.compile(r"[A-Za-z]{1,40}(,[A-Za-z]{1,40}){0,20}", re.ASCII),
}
# TRES measured in sizes: sacctmgr takes and prints them with K/M/G/T/P suffixes, M when bare.
_SIZE_TRES = frozenset({"mem", "vmem", "fs/disk"})
_SIZE_UNITS_IN_KIB = {"K": 1, "M": 1024, "G": 1024**2, "T": 1024**3, "P": 1024**4}


@dataclass(frozen=True)
class LimitField:
    """One sacctmgr limit: the keyword ``set`` takes, the column ``show`` prints, its value type."""

    keyword: str
    column: str
    value_type: str
    on_qos: bool = True
    on_association: bool = True


LIMIT_FIELDS = {
    "GrpJobs": LimitField("GrpJobs", "GrpJobs", _INT),
    "GrpJobsAccrue": LimitField("GrpJobsAccrue", "GrpJobsAccrue", _INT),
    "GrpSubmitJobs": LimitField("GrpSubmitJobs", "GrpSubmit", _INT),
    "GrpTRES": LimitField("GrpTRES", "GrpTRES", _TRES),
    "GrpTRESMins": LimitField("GrpTRESMins", "GrpTRESMins", _TRES),
    "GrpTRESRunMins": LimitField("GrpTRESRunMins", "GrpTRESRunMins", _TRES),
    "GrpWall": LimitField("GrpWall", "GrpWall", _MINUTES),
    "MaxTRES": LimitField("MaxTRES", "MaxTRES", _TRES),
    "MaxTRESPerNode": LimitField("MaxTRESPerNode", "MaxTRESPerNode", _TRES),
    "MaxTRESMins": LimitField("MaxTRESMins", "MaxTRESMins", _TRES),
    "MaxWall": LimitField("MaxWall", "MaxWall", _MINUTES),
    "Priority": LimitField("Priority", "Priority", _INT),
    "MaxJobs": LimitField("MaxJobs", "MaxJobs", _INT, on_qos=False),
    "MaxJobsAccrue": LimitField("MaxJobsAccrue", "MaxJobsAccrue", _INT, on_qos=False),
    "MaxSubmitJobs": LimitField("MaxSubmitJobs", "MaxSubmit", _INT, on_qos=False),
    "MaxTRESPerUser": LimitField("MaxTRESPerUser", "MaxTRESPU", _TRES, on_association=False),
    "MaxTRESPerAccount": LimitField("MaxTRESPerAccount", "MaxTRESPA", _TRES, on_association=False),
    "MaxJobsPerUser": LimitField("MaxJobsPerUser", "MaxJobsPU", _INT, on_association=False),
    "MaxJobsPerAccount": LimitField("MaxJobsPerAccount", "MaxJobsPA", _INT, on_association=False),
    "MaxSubmitJobsPerUser": LimitField("MaxSubmitJobsPerUser", "MaxSubmitPU", _INT, on_association=False),
    "MaxSubmitJobsPerAccount": LimitField(
        "MaxSubmitJobsPerAccount", "MaxSubmitPA", _INT, on_association=False
    ),
    "MinTRES": LimitField("MinTRES", "MinTRES", _TRES, on_association=False),
    "Flags": LimitField("Flags", "Flags", _FLAGS, on_association=False),
    "GraceTime": LimitField("GraceTime", "GraceTime", _SECONDS, on_association=False),
    "UsageFactor": LimitField("UsageFactor", "UsageFactor", _FLOAT, on_association=False),
    "UsageThreshold": LimitField("UsageThreshold", "UsageThreshold", _FLOAT, on_association=False),
}
# A QOS prints these cleared limits as a value, not as an empty field.
_QOS_CLEARED_AS = {"Priority": "0", "UsageFactor": "1", "GraceTime": "0"}


class SpecError(ValueError):
    """A module argument that cannot be applied; the message names it."""


@dataclass(frozen=True)
class Spec:
    """The validated module arguments; None (or absent from ``limits``) means "not compared"."""

    kind: str
    name: str
    account: str | None = None
    state: str = "present"
    description: str | None = None
    parent: str | None = None
    qos: tuple[str, ...] | None = None
    default_qos: str | None = None
    limits: dict = field(default_factory=dict)
    cluster: str | None = None


@dataclass(frozen=True)
class Current:
    """What sacctmgr shows now for the entity of a Spec (as parsed by ``parse_state``).

    An association may have one row per partition (changed together), so ``qos`` (allowed
    QOS), ``default_qos`` and ``limits`` (the raw text sacctmgr printed for the compared
    limits) hold one entry per row.
    """

    present: bool
    description: str | None = None
    parent: str | None = None
    qos: tuple = ()
    default_qos: tuple = ()
    limits: tuple = ()
    account_exists: bool = True
    known_qos: frozenset | None = None
    default_account: str | None = None
    other_accounts: tuple = ()


def build_spec(params: dict) -> Spec:
    """Validate the module's parameters and return them as a Spec; raise SpecError otherwise."""
    kind = params["kind"]
    name = params["name"] or ""
    pattern = _USER_NAME if kind == "user" else _ENTITY_NAME
    if not pattern.fullmatch(name):
        what = "a Unix user name" if kind == "user" else "1-64 lower-case letters, digits, '_', '.' or '-'"
        raise SpecError(f"name: {name[:64]!r} is not {what}")
    account = params.get("account")
    if kind == "user":
        if not account or not _ENTITY_NAME.fullmatch(account):
            raise SpecError("account: kind=user needs the association's account (lower-case name)")
    elif account is not None:
        raise SpecError("account: only for kind=user")
    description = params.get("description")
    if description is not None:
        if kind == "user":
            raise SpecError("description: only for kind=account or kind=qos")
        if not _DESCRIPTION.fullmatch(description):
            raise SpecError("description: use 1-200 letters, digits, spaces and _ . , : ; ( ) / @ + -")
    parent = params.get("parent")
    if parent is not None and (kind != "account" or not _ENTITY_NAME.fullmatch(parent)):
        raise SpecError("parent: only for kind=account, a lower-case account name")
    cluster = params.get("cluster")
    if cluster is not None and (kind == "qos" or not _ENTITY_NAME.fullmatch(cluster)):
        raise SpecError("cluster: only for kind=account or kind=user, a lower-case cluster name")
    qos, default_qos = _qos_choice(kind, params.get("qos"), params.get("default_qos"))
    limits = {limit: _limit_text(kind, limit, value) for limit, value in (params.get("limits") or {}).items()}
    return Spec(
        kind=kind,
        name=name,
        account=account,
        state=params.get("state") or "present",
        description=description,
        parent=parent,
        qos=qos,
        default_qos=default_qos,
        limits=limits,
        cluster=cluster,
    )


def _qos_choice(kind: str, qos: list | None, default_qos: str | None) -> tuple:
    """The validated (sorted allowed QOS or None, default QOS or None)."""
    if (qos is not None or default_qos is not None) and kind == "qos":
        raise SpecError("qos/default_qos: only for kind=account or kind=user")
    if qos is not None:
        if not qos:
            raise SpecError("qos: give at least one QOS (an association always has some)")
        for qos_name in qos:
            if not isinstance(qos_name, str) or not _ENTITY_NAME.fullmatch(qos_name):
                raise SpecError(f"qos: {str(qos_name)[:64]!r} is not a QOS name")
        qos = tuple(sorted(set(qos)))
    if default_qos is not None:
        if not _ENTITY_NAME.fullmatch(default_qos):
            raise SpecError(f"default_qos: {default_qos[:64]!r} is not a QOS name")
        if qos is not None and default_qos not in qos:
            raise SpecError("default_qos: must be one of qos")
    return qos, default_qos


def _limit_text(kind: str, limit: object, value: object) -> str:
    """The validated sacctmgr text of one limit value ("-1" clears)."""
    spec = LIMIT_FIELDS.get(limit) if isinstance(limit, str) else None
    if spec is None:
        raise SpecError(f"limits: unknown limit {str(limit)[:40]!r}; known: {', '.join(LIMIT_FIELDS)}")
    if not (spec.on_qos if kind == "qos" else spec.on_association):
        raise SpecError(f"limits: {limit} does not apply to kind={kind}")
    if value is None:
        return _CLEAR
    if isinstance(value, bool):
        raise SpecError(f"limits: {limit} takes a number or string, not a boolean")
    if isinstance(value, list) and spec.value_type == _FLAGS:
        value = ",".join(str(flag) for flag in value)
    text = str(value)
    if text == _CLEAR or (spec.value_type == _FLAGS and text == ""):
        return _CLEAR
    if not _VALUE_PATTERNS[spec.value_type].fullmatch(text):
        raise SpecError(f"limits: {limit}={text[:60]!r} is not a valid {spec.value_type} value")
    return text


def read_commands(spec: Spec) -> dict:
    """The sacctmgr show commands (argv lists, by purpose) whose output ``parse_state`` reads."""
    columns = [LIMIT_FIELDS[limit].column for limit in spec.limits]
    reads = {}
    if spec.kind == "qos":
        fmt = ",".join(["Name", *columns, "Description"])
        reads["qos"] = [*_SHOW, "qos", "where", f"name={spec.name}", f"format={fmt}"]
        return reads
    account = spec.name if spec.kind == "account" else spec.account
    reads["account"] = [*_SHOW, "account", "where", f"name={account}", "format=Account,Description"]
    association_format = "format=Account,User,Partition,ParentName,QOS,DefaultQOS"
    on_cluster = _cluster_filter(spec)
    if spec.kind == "account":
        reads["associations"] = [
            *_SHOW,
            "associations",
            "where",
            f"accounts={account}",
            *on_cluster,
            association_format,
        ]
        where = ["where", f"accounts={account}", *on_cluster]
    else:
        # All the user's associations: their other accounts matter when removing this one.
        reads["associations"] = [
            *_SHOW,
            "associations",
            "where",
            f"users={spec.name}",
            *on_cluster,
            association_format,
        ]
        reads["user"] = [*_SHOW, "user", "where", f"name={spec.name}", "format=User,DefaultAccount"]
        where = ["where", f"accounts={account}", f"users={spec.name}", *on_cluster]
    if columns:
        # WOPLimits: the association's own limits, not those inherited from its parents.
        fmt = ",".join(["Account", "User", "Partition", *columns])
        reads["limits"] = [*_SHOW, "associations", *where, f"format={fmt}", "WOPLimits"]
    if spec.qos is not None or spec.default_qos is not None:
        reads["qos_names"] = [*_SHOW, "qos", "format=Name"]
    return reads


def parse_state(spec: Spec, outputs: dict) -> Current:
    """What sacctmgr showed for ``spec``'s entity, from the outputs of ``read_commands(spec)``."""
    limit_names = list(spec.limits)
    if spec.kind == "qos":
        rows = _split_rows(outputs["qos"], 2 + len(limit_names))
        row = next((values for values in rows if values[0] == spec.name), None)
        if row is None:
            return Current(present=False)
        return Current(
            present=True,
            description=row[-1],
            limits=({limit: row[1 + index] for index, limit in enumerate(limit_names)},),
        )
    account = spec.name if spec.kind == "account" else spec.account
    user = spec.name if spec.kind == "user" else ""
    account_rows = _split_rows(outputs["account"], 2)
    account_exists = any(values[0] == account for values in account_rows)
    associations = _split_rows(outputs["associations"], 6)
    mine = [values for values in associations if values[0] == account and values[1] == user]
    limit_rows = _split_rows(outputs.get("limits", ""), 3 + len(limit_names))
    limits = tuple(
        {limit: values[3 + index] for index, limit in enumerate(limit_names)}
        for values in limit_rows
        if values[0] == account and values[1] == user
    )
    known_qos = None
    if "qos_names" in outputs:
        known_qos = frozenset(values[0] for values in _split_rows(outputs["qos_names"], 1))
    default_account = None
    if "user" in outputs:
        default_account = next(
            (values[1] for values in _split_rows(outputs["user"], 2) if values[0] == spec.name), None
        )
    other_accounts = tuple(
        sorted({values[0] for values in associations if values[1] == user and values[0] != account})
    )
    description = next((values[1] for values in account_rows if values[0] == account), None)
    if not mine:
        return Current(
            present=False,
            account_exists=account_exists,
            known_qos=known_qos,
            default_account=default_account,
            other_accounts=other_accounts,
        )
    return Current(
        present=True,
        description=description if spec.kind == "account" else None,
        parent=mine[0][3] or None,
        qos=tuple(frozenset(name for name in values[4].split(",") if name) for values in mine),
        default_qos=tuple(values[5] for values in mine),
        limits=limits,
        account_exists=account_exists,
        known_qos=known_qos,
        default_account=default_account,
        other_accounts=other_accounts,
    )


def _split_rows(text: str, columns: int) -> list:
    """The ``|``-separated rows of ``--parsable2`` output; the last column keeps any ``|``."""
    rows = []
    for line in text.splitlines():
        if not line.strip():
            continue
        values = line.split("|", columns - 1)
        if len(values) != columns:
            raise ValueError(
                f"unexpected sacctmgr line with {len(values)} of {columns} fields: {line[:200]!r}"
            )
        rows.append(values)
    return rows


def blockers(spec: Spec, current: Current) -> list:
    """Why the plan cannot succeed as things stand (missing account or QOS), as messages."""
    if spec.state == "absent":
        return []
    problems = []
    if spec.kind == "user" and not current.account_exists:
        problems.append(f"account {spec.account} does not exist (create it with kind=account first)")
    wanted = set(spec.qos or ())
    if spec.default_qos is not None:
        wanted.add(spec.default_qos)
    if current.known_qos is not None:
        missing = sorted(wanted - current.known_qos)
        if missing:
            problems.append(f"QOS {', '.join(missing)} do(es) not exist (create with kind=qos first)")
    return problems


def warnings_for(spec: Spec, current: Current) -> list:
    """Differences the module leaves alone on purpose, as messages."""
    if spec.kind == "account" and spec.parent and current.present and current.parent != spec.parent:
        return [f"account {spec.name} has parent {current.parent}; the module does not move accounts"]
    return []


def plan_changes(spec: Spec, current: Current) -> list:
    """The sacctmgr commands (argv lists) that make ``current`` match ``spec``, in a safe order.

    sacctmgr silently refuses a default QOS the association may not use and the removal of
    its default QOS, so missing QOS are added first, then the default is set, then the
    extra QOS are removed.
    """
    if spec.state == "absent":
        return _removal(spec, current) if current.present else []
    if not current.present:
        return [_creation(spec)]
    target = _target(spec)
    plan = []
    settings = []
    if spec.description is not None and spec.description.lower() != (current.description or "").lower():
        settings.append(f"description={spec.description}")
    settings += _limit_settings(spec, current)
    if settings:
        plan.append([*_CHANGE, *target, "set", *settings])
    if spec.qos is not None:
        missing = sorted(set(spec.qos) - frozenset.intersection(*current.qos))
        if missing:
            plan.append([*_CHANGE, *target, "set", f"qos+={','.join(missing)}"])
    if spec.default_qos is not None and any(shown != spec.default_qos for shown in current.default_qos):
        plan.append([*_CHANGE, *target, "set", f"defaultqos={spec.default_qos}"])
    if spec.qos is not None:
        extra = sorted(frozenset.union(*current.qos) - set(spec.qos))
        if extra:
            plan.append([*_CHANGE, *target, "set", f"qos-={','.join(extra)}"])
    return plan


def _cluster_filter(spec: Spec) -> list:
    """``cluster=<name>`` when the spec names one: sacctmgr's where clauses and add take it."""
    return [f"cluster={spec.cluster}"] if spec.cluster else []


def _target(spec: Spec) -> list:
    if spec.kind == "qos":
        return ["modify", "qos", "where", f"name={spec.name}"]
    if spec.kind == "account":
        return ["modify", "account", "where", f"name={spec.name}", *_cluster_filter(spec)]
    return ["modify", "user", "where", f"name={spec.name}", f"account={spec.account}", *_cluster_filter(spec)]


def _creation(spec: Spec) -> list:
    # name=<n>: a bare name after "add <kind>" would be read as an option if it ever matched one.
    argv = [*_CHANGE, "add", spec.kind, f"name={spec.name}", *_cluster_filter(spec)]
    if spec.kind == "user":
        argv.append(f"account={spec.account}")
    if spec.description is not None:
        argv.append(f"description={spec.description}")
    if spec.parent is not None:
        argv.append(f"parent={spec.parent}")
    if spec.qos:
        argv.append(f"qos={','.join(spec.qos)}")
    if spec.default_qos is not None:
        argv.append(f"defaultqos={spec.default_qos}")
    # Nothing to clear on a new entity; TRES entries set to -1 are left out the same way.
    for limit, text in spec.limits.items():
        value = text
        if LIMIT_FIELDS[limit].value_type == _TRES:
            value = ",".join(entry for entry in text.split(",") if not entry.endswith("=-1"))
        if value and value != _CLEAR:
            argv.append(f"{LIMIT_FIELDS[limit].keyword}={value}")
    return argv


def _removal(spec: Spec, current: Current) -> list:
    if spec.kind != "user":
        return [[*_CHANGE, "remove", spec.kind, "where", f"name={spec.name}", *_cluster_filter(spec)]]
    plan = []
    # sacctmgr refuses to remove a user's default account while they have others.
    if current.default_account == spec.account and current.other_accounts:
        new_default = current.other_accounts[0]
        plan.append(
            [*_CHANGE, "modify", "user", "where", f"name={spec.name}", "set", f"defaultaccount={new_default}"]
        )
    plan.append(
        [
            *_CHANGE,
            "remove",
            "user",
            "where",
            f"name={spec.name}",
            f"account={spec.account}",
            *_cluster_filter(spec),
        ]
    )
    return plan


def _limit_settings(spec: Spec, current: Current) -> list:
    settings = []
    for limit, text in spec.limits.items():
        wanted = normalise_limit(spec.kind, limit, text)
        shown = [normalise_limit(spec.kind, limit, row[limit]) for row in current.limits] or [None]
        if all(value == wanted for value in shown):
            continue
        field_spec = LIMIT_FIELDS[limit]
        setting = text
        if field_spec.value_type == _TRES:
            # sacctmgr merges TRES lists: TRES no longer wanted must be cleared one by one.
            stale = sorted({name for value in shown for name in (value or {})} - set(wanted))
            entries = [f"{name}={amount}" for name, amount in _tres_entries(text) if amount != _CLEAR]
            setting = ",".join(entries + [f"{name}=-1" for name in stale])
            if not setting:
                continue
        settings.append(f"{field_spec.keyword}={setting}")
    return settings


def normalise_limit(kind: str, limit: str, text: str | None) -> object:
    """A comparable form of a limit value given to the module or printed by sacctmgr.

    Unset (empty, "-1") is None, or the value a QOS prints for a cleared limit; TRES lists
    become {name: amount} (sizes in KiB); times become seconds; flags a case-folded set.
    """
    value_type = LIMIT_FIELDS[limit].value_type
    text = (text or "").strip()
    if text in ("", _CLEAR) and kind == "qos" and limit in _QOS_CLEARED_AS:
        text = _QOS_CLEARED_AS[limit]
    if value_type == _TRES:
        return {name: _tres_amount(name, amount) for name, amount in _tres_entries(text) if amount != _CLEAR}
    if value_type == _FLAGS:
        return frozenset(flag.lower() for flag in text.split(",") if flag and flag != _CLEAR)
    return None if text in ("", _CLEAR) else _scalar(value_type, text)


def _scalar(value_type: str, text: str) -> object:
    if value_type == _MINUTES:
        return slurm_time_seconds(text)
    if value_type == _SECONDS:
        return int(text) if text.isdigit() else slurm_time_seconds(text)
    if value_type == _FLOAT:
        return float(text)
    return int(text)


def _tres_entries(text: str) -> list:
    entries = []
    for entry in text.split(","):
        name, _, amount = entry.partition("=")
        if name and name != _CLEAR:
            entries.append((name, amount))
    return entries


def _tres_amount(name: str, amount: str) -> int:
    if name in _SIZE_TRES:
        unit = amount[-1] if amount[-1:].isalpha() else "M"
        number = amount[:-1] if amount[-1:].isalpha() else amount
        return int(number) * _SIZE_UNITS_IN_KIB[unit]
    return int(amount)


def slurm_time_seconds(text: str) -> int:
    """Seconds in a Slurm time: minutes, min:sec, h:m:s, d-h, d-h:m or d-h:m:s."""
    days, dash, rest = text.rpartition("-")
    parts = [int(part) for part in rest.split(":")]
    if dash:
        hours, minutes, seconds = [*parts, 0, 0][:3]
        return ((int(days) * 24 + hours) * 60 + minutes) * 60 + seconds
    if len(parts) == 1:
        return parts[0] * 60
    if len(parts) == 2:
        return parts[0] * 60 + parts[1]
    return (parts[0] * 60 + parts[1]) * 60 + parts[2]


def diff_of(spec: Spec, current: Current) -> dict:
    """Before and after of the compared fields, for Ansible's --diff."""
    before = {"state": "present" if current.present else "absent"}
    after = {"state": spec.state}
    if spec.state == "absent" or not current.present:
        if spec.state == "present":
            after.update(_wanted_fields(spec))
        return {
            "before": before,
            "after": after,
            "before_header": _header(spec),
            "after_header": _header(spec),
        }
    if spec.description is not None:
        before["description"] = current.description
        changed = spec.description.lower() != (current.description or "").lower()
        after["description"] = spec.description if changed else current.description
    if spec.qos is not None:
        before["qos"] = sorted(frozenset.union(*current.qos))
        after["qos"] = list(spec.qos)
    if spec.default_qos is not None:
        before["default_qos"] = ",".join(sorted(set(current.default_qos))) or None
        after["default_qos"] = spec.default_qos
    for limit, text in spec.limits.items():
        shown = current.limits[0][limit] if current.limits else ""
        before[limit] = shown or None
        differs = any(
            normalise_limit(spec.kind, limit, row[limit]) != normalise_limit(spec.kind, limit, text)
            for row in current.limits
        )
        after[limit] = (None if text == _CLEAR else text) if differs else before[limit]
    return {"before": before, "after": after, "before_header": _header(spec), "after_header": _header(spec)}


def _wanted_fields(spec: Spec) -> dict:
    fields = {}
    if spec.description is not None:
        fields["description"] = spec.description
    if spec.parent is not None:
        fields["parent"] = spec.parent
    if spec.qos is not None:
        fields["qos"] = list(spec.qos)
    if spec.default_qos is not None:
        fields["default_qos"] = spec.default_qos
    fields.update({limit: text for limit, text in spec.limits.items() if text != _CLEAR})
    return fields


def _header(spec: Spec) -> str:
    if spec.kind == "user":
        return f"slurm user association {spec.name} in account {spec.account}"
    return f"slurm {spec.kind} {spec.name}"


def main() -> None:
    """Run the module: read, plan, apply (unless in check mode), read again to judge."""
    module = AnsibleModule(
        argument_spec={
            "kind": {"type": "str", "required": True, "choices": ["account", "qos", "user"]},
            "name": {"type": "str", "required": True},
            "account": {"type": "str"},
            "state": {"type": "str", "default": "present", "choices": ["present", "absent"]},
            "description": {"type": "str"},
            "parent": {"type": "str"},
            "qos": {"type": "list", "elements": "str"},
            "default_qos": {"type": "str"},
            "limits": {"type": "dict"},
            "cluster": {"type": "str"},
        },
        required_if=[("kind", "user", ["account"])],
        supports_check_mode=True,
    )
    try:
        spec = build_spec(module.params)
    except SpecError as exc:
        module.fail_json(msg=str(exc))
    sacctmgr = module.get_bin_path("sacctmgr", required=True)

    def run(argv: list) -> tuple:
        return module.run_command([sacctmgr, *argv[1:]], environ_update={"LC_ALL": "C"})

    def read_state() -> Current:
        outputs = {}
        for purpose, argv in read_commands(spec).items():
            rc, out, err = run(argv)
            if rc != 0:
                module.fail_json(msg=f"cannot read Slurm state: {' '.join(argv)}: {err.strip()[:500]}", rc=rc)
            outputs[purpose] = out
        try:
            return parse_state(spec, outputs)
        except ValueError as exc:
            module.fail_json(msg=str(exc))

    current = read_state()
    for warning in warnings_for(spec, current):
        module.warn(warning)
    commands = plan_changes(spec, current)
    diff = diff_of(spec, current)
    problems = blockers(spec, current)
    if problems and commands:
        if not module.check_mode:
            module.fail_json(msg="; ".join(problems), commands=commands, diff=diff)
        # In check mode an earlier task of the same run may be about to create them.
        for problem in problems:
            module.warn(problem)
    if module.check_mode or not commands:
        module.exit_json(changed=bool(commands), commands=commands, diff=diff)
    failures = []
    for argv in commands:
        rc, out, err = run(argv)
        if rc != 0:
            failures.append(f"{' '.join(argv)}: exit {rc}: {(err or out).strip()[:500]}")
    # sacctmgr's exit status does not say whether a change took effect: the state does.
    remaining = plan_changes(spec, read_state())
    if remaining:
        module.fail_json(
            msg=f"sacctmgr did not apply {len(remaining)} change(s)",
            commands=commands,
            remaining=remaining,
            failures=failures,
            diff=diff,
        )
    module.exit_json(changed=True, commands=commands, diff=diff)


if __name__ == "__main__":
    main()
