import pytest

from slurm.account_provisioning import AccountSpecError
from slurm.association_limits import (
    BudgetLock,
    apply_budget_locks,
    parse_budget_locks,
    plan_budget_locks,
    read_budget_locks,
)
from slurm.errors import SlurmOutputError
from tests.unit.slurm_output_fixtures import recorded

S = ["sacctmgr", "--immediate", "modify", "account", "where"]


def test_recorded_locks() -> None:
    # h1acct: both locks; h1acct_gpu: GPU lock beside an administrator's cpu=600000 limit;
    # sgw_cli_test: no limits; h1_no_such_account: absent from sacctmgr's answer.
    assert parse_budget_locks(recorded("sacctmgr_budget_locks.txt")) == {
        "h1acct": BudgetLock(gpu=True, all=True),
        "h1acct_gpu": BudgetLock(gpu=True, all=False),
        "sgw_cli_test": BudgetLock(),
    }


def test_half_applied_money_lock_is_not_a_lock() -> None:
    # GrpSubmit=0 left behind without cpu=0.
    assert parse_budget_locks(recorded("sacctmgr_budget_partial.txt")) == {
        "h1acct": BudgetLock(gpu=True, all=False)
    }


def test_plan_changes_only_the_parts_that_differ() -> None:
    current = parse_budget_locks(recorded("sacctmgr_budget_locks.txt"))
    desired = {
        "h1acct": BudgetLock(gpu=True, all=False),
        "h1acct_gpu": BudgetLock(gpu=False, all=True),
        "sgw_cli_test": BudgetLock(gpu=True),
        "h1_no_such_account": BudgetLock(all=True),
    }
    assert plan_budget_locks(current, desired) == [
        [*S, "name=h1acct", "set", "GrpSubmitJobs=-1", "GrpTRESRunMins=cpu=-1"],
        [*S, "name=h1acct_gpu", "set", "GrpSubmitJobs=0", "GrpTRESRunMins=cpu=0,gres/gpu=-1"],
        [*S, "name=sgw_cli_test", "set", "GrpTRESRunMins=gres/gpu=0"],
    ]


def test_plan_is_empty_when_locks_already_match() -> None:
    current = parse_budget_locks(recorded("sacctmgr_budget_locks.txt"))
    assert plan_budget_locks(current, current) == []
    assert plan_budget_locks(current, {}) == []


def test_unlocking_everything_clears_each_lock_once() -> None:
    current = {"h1acct": BudgetLock(gpu=True, all=True)}
    assert plan_budget_locks(current, {"h1acct": BudgetLock()}) == [
        [*S, "name=h1acct", "set", "GrpSubmitJobs=-1", "GrpTRESRunMins=cpu=-1,gres/gpu=-1"]
    ]


@pytest.mark.parametrize("text", ["h1acct||0\n", "|alice||\n", "h1acct||0|cpu\n"])
def test_malformed_sacctmgr_output_is_refused(text: str) -> None:
    with pytest.raises(SlurmOutputError):
        parse_budget_locks(text)


class NoCommands:
    """A runner for calls that must be refused before any command runs."""

    def run(self, argv: object, **_: object) -> str:
        raise AssertionError(f"unexpected command {argv}")

    def capture(self, argv: object, **_: object) -> str:
        raise AssertionError(f"unexpected command {argv}")


@pytest.mark.parametrize("account", ["a,b", "name=x", "A", "", "x\ny"])
def test_account_names_that_would_split_sacctmgr_arguments_are_refused(account: str) -> None:
    with pytest.raises(AccountSpecError):
        read_budget_locks(NoCommands(), [account])
    with pytest.raises(AccountSpecError):
        apply_budget_locks(NoCommands(), {account: BudgetLock(all=True)})


def test_no_accounts_runs_no_command() -> None:
    assert read_budget_locks(NoCommands(), []) == {}
    assert apply_budget_locks(NoCommands(), {}) == []
