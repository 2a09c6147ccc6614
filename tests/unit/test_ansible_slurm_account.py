"""The slurm_account Ansible module's pure functions on recorded real `sacctmgr -nP` output."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

MODULE_PATH = Path(__file__).parents[2] / "ansible" / "plugins" / "modules" / "slurm_account.py"
FIXTURES = Path(__file__).parent / "fixtures" / "slurm_output"


def _load_module():
    spec = importlib.util.spec_from_file_location("slurm_account", MODULE_PATH)
    module = importlib.util.module_from_spec(spec)
    # dataclasses look the module up in sys.modules while the class bodies run.
    sys.modules["slurm_account"] = module
    spec.loader.exec_module(module)
    return module


sa = _load_module()
QOS_LIMITS = [name for name, limit in sa.LIMIT_FIELDS.items() if limit.on_qos]
ASSOCIATION_LIMITS = [name for name, limit in sa.LIMIT_FIELDS.items() if limit.on_association]


def fixture(name: str) -> str:
    return (FIXTURES / f"sacctmgr_module_{name}.txt").read_text()


def params(**given) -> dict:
    base = dict.fromkeys(
        ("account", "description", "parent", "qos", "default_qos", "limits", "cluster"),
    )
    return {**base, "state": "present", **given}


def qos_state(spec, recorded: str):
    """Parse a recording (made with every QOS limit read) and keep the spec's limits."""
    full = sa.parse_state(
        sa.Spec(kind="qos", name=spec.name, limits=dict.fromkeys(QOS_LIMITS, "-1")),
        {"qos": fixture(recorded)},
    )
    limits = {name: full.limits[0][name] for name in spec.limits} if full.present else {}
    return sa.Current(present=full.present, description=full.description, limits=(limits,))


def account_state(spec):
    """Parse the recorded b2fx_acct outputs for a kind=account spec (every association limit read)."""
    full_spec = sa.Spec(
        kind="account", name=spec.name, qos=("normal",), limits=dict.fromkeys(ASSOCIATION_LIMITS)
    )
    state = sa.parse_state(
        full_spec,
        {
            "account": fixture("account"),
            "associations": fixture("account_associations"),
            "limits": fixture("account_limits"),
            "qos_names": fixture("qos_names"),
        },
    )
    limits = tuple({name: row[name] for name in spec.limits} for row in state.limits)
    return sa.Current(**{**state.__dict__, "limits": limits})


def user_state(spec):
    """Parse the recorded b2fxuser outputs for a kind=user spec (every association limit read)."""
    full_spec = sa.Spec(
        kind="user",
        name=spec.name,
        account=spec.account,
        qos=("normal",),
        limits=dict.fromkeys(ASSOCIATION_LIMITS),
    )
    state = sa.parse_state(
        full_spec,
        {
            "account": fixture("account"),
            "associations": fixture("user_associations"),
            "user": fixture("user"),
            "limits": fixture("user_limits"),
            "qos_names": fixture("qos_names"),
        },
    )
    limits = tuple({name: row[name] for name in spec.limits} for row in state.limits)
    return sa.Current(**{**state.__dict__, "limits": limits})


def test_read_commands_match_the_recorded_formats():
    spec = sa.Spec(kind="qos", name="b2fx_gpu", limits=dict.fromkeys(QOS_LIMITS, "-1"))
    assert sa.read_commands(spec)["qos"][-1] == (
        "format=Name,GrpJobs,GrpJobsAccrue,GrpSubmit,GrpTRES,GrpTRESMins,GrpTRESRunMins,GrpWall,MaxTRES,"
        "MaxTRESPerNode,MaxTRESMins,MaxWall,Priority,MaxTRESPU,MaxTRESPA,MaxJobsPU,MaxJobsPA,MaxSubmitPU,"
        "MaxSubmitPA,MinTRES,Flags,GraceTime,UsageFactor,UsageThreshold,Description"
    )
    user = sa.Spec(kind="user", name="b2fxuser", account="b2fx_acct", limits={"MaxWall": "60"})
    reads = sa.read_commands(user)
    assert reads["limits"] == [
        "sacctmgr",
        "--noheader",
        "--parsable2",
        "show",
        "associations",
        "where",
        "accounts=b2fx_acct",
        "users=b2fxuser",
        "format=Account,User,Partition,MaxWall",
        "WOPLimits",
    ]
    assert set(reads) == {"account", "associations", "user", "limits"}


def test_equivalent_qos_values_in_other_spellings_plan_nothing():
    spec = sa.build_spec(
        params(
            kind="qos",
            name="b2fx_gpu",
            description="B2 FIXTURE GPU QOS",
            limits={
                "GrpTRES": "mem=512000M,gres/gpu=8,cpu=64",
                "GrpWall": "7-0",
                "MaxWall": 2880,
                "MaxTRESPerUser": "gres/gpu=2,cpu=32",
                "GrpSubmitJobs": 100,
                "Flags": ["NoDecay", "denyonlimit"],
                "GraceTime": 120,
                "UsageFactor": 1.5,
                "Priority": "10",
            },
        )
    )
    current = qos_state(spec, "qos_gpu")
    assert current.present
    assert sa.plan_changes(spec, current) == []
    diff = sa.diff_of(spec, current)
    assert diff["before"] == diff["after"]
    assert diff["before"]["GrpTRES"] == "cpu=64,gres/gpu=8,mem=500G"


def test_cleared_limits_match_what_a_plain_qos_prints():
    spec = sa.build_spec(params(kind="qos", name="b2fx_plain", limits=dict.fromkeys(QOS_LIMITS)))
    assert sa.plan_changes(spec, qos_state(spec, "qos_plain")) == []


def test_changed_qos_limits_are_set_in_one_command_and_unnamed_tres_cleared():
    spec = sa.build_spec(
        params(
            kind="qos",
            name="b2fx_gpu",
            limits={"MaxWall": "1-00:00:00", "GrpTRES": "gres/gpu=8", "Flags": None, "GrpJobs": 20},
        )
    )
    current = qos_state(spec, "qos_gpu")
    assert sa.plan_changes(spec, current) == [
        [
            "sacctmgr",
            "--immediate",
            "modify",
            "qos",
            "where",
            "name=b2fx_gpu",
            "set",
            "MaxWall=1-00:00:00",
            "GrpTRES=gres/gpu=8,cpu=-1,mem=-1",
            "Flags=-1",
        ]
    ]
    diff = sa.diff_of(spec, current)
    assert diff["before"] == {
        "state": "present",
        "MaxWall": "2-00:00:00",
        "GrpTRES": "cpu=64,gres/gpu=8,mem=500G",
        "Flags": "DenyOnLimit,NoDecay",
        "GrpJobs": "20",
    }
    assert diff["after"] == {
        "state": "present",
        "MaxWall": "1-00:00:00",
        "GrpTRES": "gres/gpu=8",
        "Flags": None,
        "GrpJobs": "20",
    }


def test_a_missing_qos_is_added_with_its_limits_only():
    spec = sa.build_spec(
        params(
            kind="qos",
            name="b2fx_new",
            limits={"GrpTRES": "gres/gpu=4,cpu=-1", "MaxWall": None, "Priority": 5},
        )
    )
    # sacctmgr prints nothing (exit 0) for an unknown QOS name.
    current = sa.parse_state(spec, {"qos": ""})
    assert not current.present
    assert sa.plan_changes(spec, current) == [
        ["sacctmgr", "--immediate", "add", "qos", "name=b2fx_new", "GrpTRES=gres/gpu=4", "Priority=5"]
    ]
    assert sa.diff_of(spec, current)["after"] == {
        "state": "present",
        "GrpTRES": "gres/gpu=4,cpu=-1",
        "Priority": "5",
    }


def test_qos_removal():
    spec = sa.build_spec(params(kind="qos", name="b2fx_gpu", state="absent"))
    current = qos_state(spec, "qos_gpu")
    assert sa.plan_changes(spec, current) == [
        ["sacctmgr", "--immediate", "remove", "qos", "where", "name=b2fx_gpu"]
    ]
    assert sa.diff_of(spec, current)["after"] == {"state": "absent"}


def test_account_qos_changes_add_then_default_then_remove():
    spec = sa.build_spec(
        params(kind="account", name="b2fx_acct", qos=["b2fx_plain", "b2fx_gpu"], default_qos="b2fx_plain")
    )
    current = account_state(spec)
    target = ["sacctmgr", "--immediate", "modify", "account", "where", "name=b2fx_acct", "set"]
    assert sa.plan_changes(spec, current) == [
        [*target, "qos+=b2fx_plain"],
        [*target, "defaultqos=b2fx_plain"],
        [*target, "qos-=normal"],
    ]
    diff = sa.diff_of(spec, current)
    assert diff["before"]["qos"] == ["b2fx_gpu", "normal"]
    assert diff["after"]["qos"] == ["b2fx_gpu", "b2fx_plain"]
    assert sa.blockers(spec, current) == []


def test_account_limits_compare_the_accounts_own_row():
    spec = sa.build_spec(
        params(
            kind="account",
            name="b2fx_acct",
            description="b2 fixture account",
            limits={"GrpTRES": "gres/gpu=16", "MaxWall": "24:00:00", "GrpSubmitJobs": 50, "Priority": 4},
        )
    )
    assert sa.plan_changes(spec, account_state(spec)) == [
        ["sacctmgr", "--immediate", "modify", "account", "where", "name=b2fx_acct", "set", "Priority=4"]
    ]


def test_account_parent_is_only_used_on_create():
    spec = sa.build_spec(params(kind="account", name="b2fx_acct", parent="physics"))
    current = account_state(spec)
    assert sa.plan_changes(spec, current) == []
    assert sa.warnings_for(spec, current) == [
        "account b2fx_acct has parent root; the module does not move accounts"
    ]


def test_user_association_limits_are_its_own():
    spec = sa.build_spec(
        params(
            kind="user",
            name="b2fxuser",
            account="b2fx_acct",
            qos=["b2fx_gpu"],
            limits={"MaxWall": 720, "MaxJobs": 6},
        )
    )
    current = user_state(spec)
    assert current.present
    assert current.default_account == "b2fx_acct"
    assert sa.plan_changes(spec, current) == [
        [
            "sacctmgr",
            "--immediate",
            "modify",
            "user",
            "where",
            "name=b2fxuser",
            "account=b2fx_acct",
            "set",
            "MaxJobs=6",
        ]
    ]


def test_removing_a_users_default_account_moves_the_default_first():
    spec = sa.build_spec(params(kind="user", name="b2fxuser", account="b2fx_acct", state="absent"))
    current = user_state(spec)
    assert current.other_accounts == ("b2fx_other",)
    assert sa.plan_changes(spec, current) == [
        [
            "sacctmgr",
            "--immediate",
            "modify",
            "user",
            "where",
            "name=b2fxuser",
            "set",
            "defaultaccount=b2fx_other",
        ],
        ["sacctmgr", "--immediate", "remove", "user", "where", "name=b2fxuser", "account=b2fx_acct"],
    ]


def test_a_missing_user_association_is_added_and_absent_one_left_alone():
    missing = sa.build_spec(
        params(
            kind="user", name="carol", account="b2fx_acct", qos=["normal", "b2fx_gpu"], default_qos="normal"
        )
    )
    # The recording holds only b2fxuser's associations: carol has none.
    current = user_state(missing)
    assert not current.present
    assert sa.plan_changes(missing, current) == [
        [
            "sacctmgr",
            "--immediate",
            "add",
            "user",
            "name=carol",
            "account=b2fx_acct",
            "qos=b2fx_gpu,normal",
            "defaultqos=normal",
        ]
    ]
    absent = sa.Spec(kind="user", name="carol", account="b2fx_acct", state="absent")
    assert sa.plan_changes(absent, current) == []


def test_a_cluster_narrows_reads_creation_and_changes_to_its_associations():
    spec = sa.build_spec(
        params(kind="user", name="john.doe", account="b2fx_acct", cluster="dev", limits={"MaxJobs": 4})
    )
    reads = sa.read_commands(spec)
    assert "cluster=dev" in reads["associations"]
    assert "cluster=dev" in reads["limits"]
    current = user_state(spec)
    assert sa.plan_changes(spec, current) == [
        [
            "sacctmgr",
            "--immediate",
            "add",
            "user",
            "name=john.doe",
            "cluster=dev",
            "account=b2fx_acct",
            "MaxJobs=4",
        ]
    ]
    account = sa.build_spec(params(kind="account", name="b2fx_acct", cluster="dev", state="absent"))
    assert sa.plan_changes(account, sa.Current(present=True)) == [
        ["sacctmgr", "--immediate", "remove", "account", "where", "name=b2fx_acct", "cluster=dev"]
    ]


def test_blockers_name_missing_qos_and_accounts():
    spec = sa.build_spec(params(kind="account", name="b2fx_acct", qos=["normal", "no_such_qos"]))
    assert sa.blockers(spec, account_state(spec)) == [
        "QOS no_such_qos do(es) not exist (create with kind=qos first)"
    ]
    user = sa.Spec(kind="user", name="b2fxuser", account="b2fx_gone")
    state = sa.parse_state(
        user,
        {"account": "", "associations": fixture("user_associations"), "user": fixture("user")},
    )
    assert sa.blockers(user, state) == [
        "account b2fx_gone does not exist (create it with kind=account first)"
    ]


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (params(kind="qos", name="Upper"), "name:"),
        (params(kind="account", name="a b"), "name:"),
        (params(kind="user", name="alice"), "account:"),
        (params(kind="user", name="alice", account="x;y"), "account:"),
        (params(kind="qos", name="q", account="a"), "account: only"),
        (params(kind="account", name="a", description='say "hi"'), "description:"),
        (params(kind="account", name="a", description="tab\there"), "description:"),
        (params(kind="qos", name="q", qos=["normal"]), "qos/default_qos"),
        (params(kind="account", name="a", qos=[]), "qos: give"),
        (params(kind="account", name="a", qos=["normal", "x=y"]), "qos:"),
        (params(kind="account", name="a", qos=["normal"], default_qos="other"), "default_qos: must"),
        (params(kind="user", name="u", account="a", parent="root"), "parent:"),
        (params(kind="user", name="john doe", account="a"), "name:"),
        (params(kind="qos", name="q", cluster="dev"), "cluster:"),
        (params(kind="account", name="a", cluster="dev;x"), "cluster:"),
        (params(kind="qos", name="q", limits={"NoSuchLimit": 1}), "unknown limit"),
        (params(kind="qos", name="q", limits={"MaxJobs": 1}), "does not apply to kind=qos"),
        (params(kind="account", name="a", limits={"Flags": "DenyOnLimit"}), "does not apply"),
        (params(kind="qos", name="q", limits={"MaxWall": "1 day"}), "MaxWall"),
        (params(kind="qos", name="q", limits={"GrpTRES": "gres/gpu=8 cpu=1"}), "GrpTRES"),
        (params(kind="qos", name="q", limits={"GrpTRES": "gres/gpu='8'"}), "GrpTRES"),
        (params(kind="qos", name="q", limits={"GrpTRES": "cpu=4\nMaxWall=1"}), "GrpTRES"),
        (params(kind="qos", name="q", limits={"GrpJobs": "5=6"}), "GrpJobs"),
        (params(kind="qos", name="q", limits={"Priority": True}), "boolean"),
        (params(kind="qos", name="q", limits={"Flags": "DenyOnLimit;rm"}), "Flags"),
    ],
)
def test_invalid_arguments_are_refused(given, message):
    with pytest.raises(sa.SpecError, match=message):
        sa.build_spec(given)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 5400),
        ("90:30", 5430),
        ("01:30:00", 5400),
        ("2-00:00:00", 172800),
        ("2-0", 172800),
        ("1-12", 129600),
        ("1-12:30", 131400),
    ],
)
def test_slurm_time_formats(text, seconds):
    assert sa.slurm_time_seconds(text) == seconds


def test_unexpected_output_is_refused():
    spec = sa.Spec(kind="qos", name="q", limits={"MaxWall": "60"})
    with pytest.raises(ValueError, match="unexpected sacctmgr line"):
        sa.parse_state(spec, {"qos": "q|60"})
