import pytest

from slurm.errors import SlurmOutputError
from slurm.sacctmgr_parser import (
    parse_account_descriptions,
    parse_associations,
    parse_default_accounts,
    parse_qos_names,
)
from tests.unit.slurm_output_fixtures import recorded


def test_associations_of_an_account() -> None:
    rows = {row.user: row for row in parse_associations(recorded("sacctmgr_associations.txt"))}
    assert set(rows) == {"", "bob", "carol"}
    assert (rows[""].qos, rows[""].default_qos) == (frozenset({"normal"}), None)
    assert rows["bob"].qos == frozenset({"normal", "sgw_cli_prov_a", "sgw_cli_short"})
    assert (rows["bob"].default_qos, rows["bob"].partition, rows["bob"].account) == (
        "sgw_cli_short",
        "",
        "sgw_cli_prov",
    )


def test_qos_names() -> None:
    assert {"normal", "sgw_cli_prov_a", "sgw_cli_short"} <= parse_qos_names(recorded("sacctmgr_qos.txt"))


def test_account_description_is_stored_lower_case() -> None:
    assert parse_account_descriptions(recorded("sacctmgr_account.txt")) == {
        "sgw_cli_prov": "cli provisioning test 2"
    }


def test_empty_output_means_nothing_exists() -> None:
    assert (parse_associations(""), parse_account_descriptions(""), parse_qos_names("")) == (
        [],
        {},
        frozenset(),
    )


def test_association_line_with_wrong_field_count_is_an_error() -> None:
    with pytest.raises(SlurmOutputError):
        parse_associations("acct|user|qos\n")


def test_default_accounts_of_users() -> None:
    assert parse_default_accounts(recorded("sacctmgr_users.txt")) == {
        "alice": "sgw_test_a",
        "bob": "sgw_test_b",
    }


def test_associations_of_users_across_accounts() -> None:
    rows = parse_associations(recorded("sacctmgr_user_associations.txt"))
    assert {row.account for row in rows if row.user == "bob"} >= {"sgw_test_b", "sgw_cli_prov"}
    assert next(row for row in rows if row.account == "sgw_cli_prov").qos == frozenset()
