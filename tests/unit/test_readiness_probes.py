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


class CountingRunner:
    def __init__(self) -> None:
        self.calls = 0

    def run(self, argv: Sequence[str]) -> str:
        self.calls += 1
        return "Slurmctld(primary) at h1 is UP\n"


def test_slurm_check_pings_at_most_once_per_max_age() -> None:
    runner = CountingRunner()
    now = [100.0]
    check = slurm_controller_check(runner, max_age_s=5.0, clock=lambda: now[0])

    async def probe_many(times: int) -> None:
        await asyncio.gather(*(check.probe() for _ in range(times)))

    asyncio.run(probe_many(50))
    assert runner.calls == 1
    now[0] += 4.9
    asyncio.run(probe_many(10))
    assert runner.calls == 1
    now[0] += 0.2
    asyncio.run(probe_many(10))
    assert runner.calls == 2


def test_a_cached_failure_is_reported_until_the_next_ping() -> None:
    now = [0.0]
    check = slurm_controller_check(UnavailableRunner(), max_age_s=5.0, clock=lambda: now[0])
    for _ in range(3):
        with pytest.raises(ReadinessFailure, match="command not found"):
            asyncio.run(check.probe())
