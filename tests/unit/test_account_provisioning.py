import pytest

from slurm.account_provisioning import (
    AccountSpecError,
    AccountState,
    SlurmAccountSpec,
    plan_account_changes,
)
from slurm.sacctmgr_parser import (
    AssociationRow,
    parse_account_descriptions,
    parse_associations,
    parse_qos_names,
)
from tests.unit.slurm_output_fixtures import recorded

S = ["sacctmgr", "--immediate"]
ACCOUNT = ["modify", "account", "where", "name=sgw_cli_prov", "set"]


def recorded_state() -> AccountState:
    """Account sgw_cli_prov: own QOS normal, no default; bob normal+a+short (default short); carol normal."""
    return AccountState(
        account="sgw_cli_prov",
        description=parse_account_descriptions(recorded("sacctmgr_account.txt"))["sgw_cli_prov"],
        existing_qos=parse_qos_names(recorded("sacctmgr_qos.txt")),
        associations=tuple(parse_associations(recorded("sacctmgr_associations.txt"))),
    )


def user(name: str) -> list[str]:
    return ["modify", "user", "where", f"name={name}", "account=sgw_cli_prov", "set"]


def spec(**changes: object) -> SlurmAccountSpec:
    values = {
        "account": "sgw_cli_prov",
        "qos": ("normal", "sgw_cli_prov_a"),
        "default_qos": "sgw_cli_prov_a",
        "users": ("alice", "bob"),
        "description": None,
    }
    return SlurmAccountSpec(**{**values, **changes})


def test_plan_from_recorded_state() -> None:
    assert plan_account_changes(recorded_state(), spec()) == [
        [*S, "remove", "user", "where", "name=carol", "account=sgw_cli_prov"],
        [*S, *ACCOUNT, "qos+=sgw_cli_prov_a"],
        [*S, *ACCOUNT, "defaultqos=sgw_cli_prov_a"],
        [*S, *user("bob"), "defaultqos=sgw_cli_prov_a"],
        [*S, *user("bob"), "qos-=sgw_cli_short"],
        [
            *S,
            "add",
            "user",
            "alice",
            "account=sgw_cli_prov",
            "qos=normal,sgw_cli_prov_a",
            "defaultqos=sgw_cli_prov_a",
        ],
    ]


def test_missing_qos_and_account_are_created_first() -> None:
    state = AccountState(
        account="sgw_new", description=None, existing_qos=frozenset({"normal"}), associations=()
    )
    plan = plan_account_changes(
        state,
        spec(
            account="sgw_new",
            qos=("normal", "sgw_new_q"),
            default_qos="sgw_new_q",
            users=("alice",),
            description="New tenant",
        ),
    )
    assert plan == [
        [*S, "add", "qos", "sgw_new_q"],
        [
            *S,
            "add",
            "account",
            "sgw_new",
            "description=New tenant",
            "qos=normal,sgw_new_q",
            "defaultqos=sgw_new_q",
        ],
        [*S, "add", "user", "alice", "account=sgw_new", "qos=normal,sgw_new_q", "defaultqos=sgw_new_q"],
    ]


def test_state_matching_the_spec_needs_nothing() -> None:
    rows = tuple(
        AssociationRow(
            account="sgw_cli_prov",
            user=name,
            partition="",
            qos=frozenset({"normal", "sgw_cli_prov_a"}),
            default_qos="sgw_cli_prov_a",
        )
        for name in ("", "alice", "bob")
    )
    state = AccountState(
        account="sgw_cli_prov",
        description="cli provisioning test 2",
        existing_qos=frozenset({"normal", "sgw_cli_prov_a"}),
        associations=rows,
    )
    assert plan_account_changes(state, spec(description="CLI provisioning test 2")) == []


def test_no_default_preference_clears_only_a_default_that_is_no_longer_allowed() -> None:
    plan = plan_account_changes(
        recorded_state(), spec(qos=("normal",), default_qos=None, users=("bob", "carol"))
    )
    assert plan == [
        [*S, *user("bob"), "defaultqos=-1"],
        [*S, *user("bob"), "qos-=sgw_cli_prov_a,sgw_cli_short"],
    ]


def test_changed_description_is_set() -> None:
    plan = plan_account_changes(
        recorded_state(),
        spec(qos=("normal",), default_qos=None, users=("carol",), description="Another text"),
    )
    assert plan[0] == [*S, *ACCOUNT, "description=Another text"]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"account": "Bad Name"}, "account"),
        ({"account": "a=b"}, "account"),
        ({"qos": ()}, "qos"),
        ({"qos": ("normal", "x,y")}, "qos"),
        ({"default_qos": "other"}, "default_qos"),
        ({"users": ("alice", "root;rm")}, "users"),
        ({"description": "bad\nline"}, "description"),
        ({"description": "quote'd"}, "description"),
    ],
)
def test_invalid_specs_name_the_field(changes: dict, field: str) -> None:
    with pytest.raises(AccountSpecError) as excinfo:
        plan_account_changes(recorded_state(), spec(**changes))
    assert excinfo.value.field == field


def test_removed_member_whose_default_account_this_is_gets_another_default_first() -> None:
    state = recorded_state()
    state = AccountState(
        account=state.account,
        description=state.description,
        existing_qos=state.existing_qos,
        associations=state.associations,
        default_accounts={"carol": "sgw_cli_prov", "bob": "sgw_test_b"},
        other_accounts={"carol": ("sgw_other_a", "sgw_other_b"), "bob": ("sgw_test_b",)},
    )
    plan = plan_account_changes(state, spec(qos=("normal",), default_qos=None, users=()))
    assert plan == [
        [*S, "remove", "user", "where", "name=bob", "account=sgw_cli_prov"],
        [*S, "modify", "user", "where", "name=carol", "set", "defaultaccount=sgw_other_a"],
        [*S, "remove", "user", "where", "name=carol", "account=sgw_cli_prov"],
    ]
