from collections.abc import Sequence

import pytest

from slurm.controller_ping import ControllerStatus, parse_scontrol_ping, ping_controller
from slurm.errors import SlurmOutputError

# Verbatim scontrol ping output from Slurm 22.05.
PRIMARY_UP = "Slurmctld(primary) at myhost is UP\n"
PRIMARY_DOWN_AS_ROOT = (
    "Slurmctld(primary) at myhost is DOWN\n"
    "*****************************************\n"
    "** RESTORE SLURMCTLD DAEMON TO SERVICE **\n"
    "*****************************************\n"
)
PRIMARY_UP_BACKUP_DOWN = "Slurmctld(primary) at host1 is UP\nSlurmctld(backup) at host2 is DOWN\n"


def test_primary_up() -> None:
    assert parse_scontrol_ping(PRIMARY_UP) == [ControllerStatus(role="primary", host="myhost", is_up=True)]


def test_primary_down_ignores_root_banner() -> None:
    assert parse_scontrol_ping(PRIMARY_DOWN_AS_ROOT) == [
        ControllerStatus(role="primary", host="myhost", is_up=False)
    ]


def test_backup_controller_line() -> None:
    assert parse_scontrol_ping(PRIMARY_UP_BACKUP_DOWN) == [
        ControllerStatus(role="primary", host="host1", is_up=True),
        ControllerStatus(role="backup", host="host2", is_up=False),
    ]


def test_numbered_backup_with_fqdn() -> None:
    statuses = parse_scontrol_ping("Slurmctld(backup2) at ctl3.cluster.example is UP\n")
    assert statuses == [ControllerStatus(role="backup2", host="ctl3.cluster.example", is_up=True)]


@pytest.mark.parametrize(
    "garbage",
    [
        "slurm_load_partitions: Unable to contact slurm controller\n",
        "Slurmctld(primary/backup) at a/b are UP/DOWN\n",
        "Slurmctld(primary) at myhost is SLEEPY\n",
    ],
)
def test_garbage_line_raises_and_quotes_it(garbage: str) -> None:
    with pytest.raises(SlurmOutputError, match="unrecognised scontrol ping line") as excinfo:
        parse_scontrol_ping(PRIMARY_UP + garbage)
    assert garbage.strip()[:20] in str(excinfo.value)


def test_long_garbage_is_truncated_in_message() -> None:
    with pytest.raises(SlurmOutputError) as excinfo:
        parse_scontrol_ping("x" * 5000)
    assert len(str(excinfo.value)) < 150


@pytest.mark.parametrize("empty", ["", "\n\n", "*****\n"])
def test_no_controller_lines_raises(empty: str) -> None:
    with pytest.raises(SlurmOutputError, match="no controllers"):
        parse_scontrol_ping(empty)


class RecordingRunner:
    def __init__(self, stdout: str) -> None:
        self.stdout = stdout
        self.calls: list[list[str]] = []

    def run(self, argv: Sequence[str]) -> str:
        self.calls.append(list(argv))
        return self.stdout


def test_ping_controller_runs_scontrol_ping() -> None:
    runner = RecordingRunner(PRIMARY_UP_BACKUP_DOWN)
    statuses = ping_controller(runner)
    assert runner.calls == [["scontrol", "ping"]]
    assert [status.is_up for status in statuses] == [True, False]
