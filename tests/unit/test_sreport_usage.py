import pytest

from slurm.errors import SlurmOutputError
from slurm.sreport_usage import SreportUsage, parse_sreport_usage, sreport_argv
from tests.unit.slurm_output_fixtures import recorded


def test_argv_names_tres_as_an_option_and_the_window_in_utc() -> None:
    assert sreport_argv(1795305600, 1795348800) == [
        "sreport",
        "-P",
        "-n",
        "-t",
        "Seconds",
        "--tres=cpu,gres/gpu",
        "cluster",
        "AccountUtilizationByUser",
        "start=2026-11-22T00:00:00",
        "end=2026-11-22T12:00:00",
    ]


def test_recorded_usage_per_account_and_user() -> None:
    rows = parse_sreport_usage(recorded("sreport_account_user_seconds.txt"))
    assert len(rows) == 70
    assert rows[:2] == [
        SreportUsage(account="root", user=None, tres="cpu", seconds=5812),
        SreportUsage(account="root", user=None, tres="gres/gpu", seconds=1628),
    ]
    by_key = {(row.account, row.user, row.tres): row.seconds for row in rows}
    assert by_key[("sgw_rt_a", None, "gres/gpu")] == by_key[("sgw_rt_a", "alice", "gres/gpu")] == 992
    assert {row.tres for row in rows} == {"cpu", "gres/gpu"}


def test_proper_name_is_not_read() -> None:
    (row,) = parse_sreport_usage("dev|acct|alice|Alice | Ops|gres/gpu|3600\n")
    assert row == SreportUsage(account="acct", user="alice", tres="gres/gpu", seconds=3600)


@pytest.mark.parametrize("text", ["dev|root|||cpu\n", "dev|root|||cpu|12.5\n", "dev||||cpu|1\n"])
def test_malformed_lines_are_refused(text: str) -> None:
    with pytest.raises(SlurmOutputError):
        parse_sreport_usage(text)
