"""provision_account against the real slurmdbd: create, change QOS, drop a member, no-op re-runs,
and Slurm then accepting or refusing jobs accordingly."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from slurm.account_provisioning import SlurmAccountSpec, provision_account, read_account_state
from slurm.batch_job import BatchJob
from slurm.cli_driver import CliSlurmDriver
from slurm.command_runner import SubprocessCommandRunner
from slurm.errors import SlurmRejected
from tests.integration.slurm_cluster import SHARED_TEST_ROOT, ensure_account, run_command

pytestmark = [pytest.mark.integration, pytest.mark.slurm]


@pytest.fixture
def names() -> Iterator[dict[str, str]]:
    """A fresh account and two fresh QOS names, removed afterwards."""
    suffix = uuid.uuid4().hex[:8]
    created = {
        "account": f"sgw_cli_prov_{suffix}",
        "qos_a": f"sgw_cli_qa_{suffix}",
        "qos_b": f"sgw_cli_qb_{suffix}",
    }
    yield created
    # Members first: sacctmgr keeps an account that is some user's default account.
    provision_account(
        SubprocessCommandRunner(timeout_s=60),
        SlurmAccountSpec(account=created["account"], qos=("normal",), default_qos=None, users=()),
    )
    run_command(
        ["sacctmgr", "--immediate", "remove", "account", "where", f"name={created['account']}"], check=False
    )
    for qos in (created["qos_a"], created["qos_b"]):
        run_command(["sacctmgr", "--immediate", "remove", "qos", "where", f"name={qos}"], check=False)


def associations(
    runner: SubprocessCommandRunner, account: str
) -> dict[str, tuple[frozenset[str], str | None]]:
    state = read_account_state(runner, account)
    return {row.user: (row.qos, row.default_qos) for row in state.associations}


def job(account: str, qos: str | None) -> BatchJob:
    gateway_id = f"sgw_cli-prov-{uuid.uuid4().hex[:10]}"
    return BatchJob(
        gateway_job_id=gateway_id,
        name="prov",
        unix_user="alice",
        account=account,
        partition="cpu",
        qos=qos,
        working_dir=str(SHARED_TEST_ROOT / "cli_provisioning" / gateway_id),
        time_limit_minutes=5,
        script="true",
    )


def test_provision_change_and_rerun(names: dict[str, str]) -> None:
    runner = SubprocessCommandRunner(timeout_s=60)
    driver = CliSlurmDriver(runner)
    account, qos_a, qos_b = names["account"], names["qos_a"], names["qos_b"]
    first = SlurmAccountSpec(
        account=account,
        qos=("normal", qos_a),
        default_qos=qos_a,
        users=("alice", "bob"),
        description="CLI provisioning test",
    )

    report = provision_account(runner, first)
    assert report.changed
    assert ("sacctmgr", "--immediate", "add", "qos", qos_a) in report.commands
    allowed = frozenset({"normal", qos_a})
    assert associations(runner, account) == {
        "": (allowed, qos_a),
        "alice": (allowed, qos_a),
        "bob": (allowed, qos_a),
    }
    assert not provision_account(runner, first).changed
    assert driver.estimate_start(job(account, qos_a)) is not None

    second = SlurmAccountSpec(
        account=account, qos=("normal", qos_b), default_qos=qos_b, users=("alice", "carol")
    )
    report = provision_account(runner, second)
    assert report.changed
    allowed = frozenset({"normal", qos_b})
    assert associations(runner, account) == {
        "": (allowed, qos_b),
        "alice": (allowed, qos_b),
        "carol": (allowed, qos_b),
    }
    assert not provision_account(runner, second).changed

    # Slurm itself now refuses the QOS that was taken away and accepts the new one.
    with pytest.raises(SlurmRejected) as excinfo:
        driver.estimate_start(job(account, qos_a))
    assert excinfo.value.field == "qos"
    assert driver.estimate_start(job(account, qos_b)) is not None

    third = SlurmAccountSpec(account=account, qos=("normal",), default_qos=None, users=("carol",))
    provision_account(runner, third)
    assert associations(runner, account) == {
        "": (frozenset({"normal"}), None),
        "carol": (frozenset({"normal"}), None),
    }
    assert not provision_account(runner, third).changed
    # alice is no longer a member: Slurm refuses her jobs under the account.
    with pytest.raises(SlurmRejected) as excinfo:
        driver.estimate_start(job(account, None))
    assert excinfo.value.field == "account"


def test_other_accounts_are_untouched(names: dict[str, str]) -> None:
    runner = SubprocessCommandRunner(timeout_s=60)
    other = f"{names['account']}x"
    try:
        provision_account(
            runner, SlurmAccountSpec(account=other, qos=("normal",), default_qos=None, users=("bob",))
        )
        before = associations(runner, other)
        provision_account(
            runner,
            SlurmAccountSpec(account=names["account"], qos=("normal",), default_qos=None, users=("alice",)),
        )
        assert (
            associations(runner, other)
            == before
            == {"": (frozenset({"normal"}), None), "bob": (frozenset({"normal"}), None)}
        )
    finally:
        run_command(["sacctmgr", "--immediate", "remove", "account", "where", f"name={other}"], check=False)


def test_member_whose_default_account_it_is_can_be_removed(names: dict[str, str]) -> None:
    runner = SubprocessCommandRunner(timeout_s=60)
    account = names["account"]
    # bob must have another account to fall back on; on a fresh cluster he has none yet.
    ensure_account("sgw_cli_prov_home", ["bob"])
    provision_account(
        runner, SlurmAccountSpec(account=account, qos=("normal",), default_qos=None, users=("bob",))
    )
    previous_default = run_command(
        ["sacctmgr", "-nP", "show", "user", "where", "name=bob", "format=defaultaccount"]
    )
    run_command(
        ["sacctmgr", "--immediate", "modify", "user", "where", "name=bob", "set", f"defaultaccount={account}"]
    )
    try:
        report = provision_account(
            runner, SlurmAccountSpec(account=account, qos=("normal",), default_qos=None, users=())
        )
        assert report.changed
        assert set(associations(runner, account)) == {""}
        default = run_command(
            ["sacctmgr", "-nP", "show", "user", "where", "name=bob", "format=defaultaccount"]
        )
        assert default.stdout.strip() not in ("", account)
    finally:
        run_command(
            [
                "sacctmgr",
                "--immediate",
                "modify",
                "user",
                "where",
                "name=bob",
                "set",
                f"defaultaccount={previous_default.stdout.strip()}",
            ],
            check=False,
        )
