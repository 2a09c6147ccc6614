import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from gateway.readiness import ReadinessFailure
from gateway.readiness_probes import database_check, slurm_controller_check
from slurm.errors import SlurmUnavailable


class FixedRunner:
    def __init__(self, stdout: str) -> None:
        self.stdout = stdout

    def run(self, argv: Sequence[str]) -> str:
        return self.stdout


class UnavailableRunner:
    def run(self, argv: Sequence[str]) -> str:
        raise SlurmUnavailable("scontrol: command not found")


def test_database_check_passes_on_reachable_sqlite(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path}/ok.db")
    try:
        asyncio.run(database_check(engine).probe())
    finally:
        engine.dispose()


def test_database_check_fails_with_short_message(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path}/missing-dir/db.sqlite")
    try:
        with pytest.raises(ReadinessFailure) as excinfo:
            asyncio.run(database_check(engine).probe())
    finally:
        engine.dispose()
    assert str(excinfo.value) == "unable to open database file"


def test_slurm_check_passes_when_primary_up() -> None:
    check = slurm_controller_check(FixedRunner("Slurmctld(primary) at h1 is UP\n"))
    assert check.name == "slurm"
    asyncio.run(check.probe())


def test_slurm_check_passes_when_only_backup_up() -> None:
    runner = FixedRunner("Slurmctld(primary) at h1 is DOWN\nSlurmctld(backup) at h2 is UP\n")
    asyncio.run(slurm_controller_check(runner).probe())


def test_slurm_check_fails_when_all_down() -> None:
    runner = FixedRunner("Slurmctld(primary) at h1 is DOWN\n")
    with pytest.raises(ReadinessFailure, match="no controller is up: primary at h1 is DOWN"):
        asyncio.run(slurm_controller_check(runner).probe())


def test_slurm_check_relays_runner_failure() -> None:
    with pytest.raises(ReadinessFailure, match=r"^scontrol: command not found$"):
        asyncio.run(slurm_controller_check(UnavailableRunner()).probe())


def test_slurm_check_reports_unparseable_output() -> None:
    with pytest.raises(ReadinessFailure, match="unrecognised scontrol ping line"):
        asyncio.run(slurm_controller_check(FixedRunner("what is this\n")).probe())
