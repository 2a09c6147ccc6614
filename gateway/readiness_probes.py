"""The gateway's standard readiness checks: database and Slurm controller."""

from __future__ import annotations

import asyncio

from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from gateway.readiness import ReadinessCheck, ReadinessFailure
from slurm.command_runner import CommandRunner
from slurm.controller_ping import ping_controller
from slurm.errors import SlurmError

# Readiness messages go to clients and logs; keep them to one short line.
MAX_MESSAGE_CHARS = 200


def database_check(engine: Engine) -> ReadinessCheck:
    """Check that ``engine`` can open a connection and run ``SELECT 1``."""

    async def probe() -> None:
        await asyncio.to_thread(_select_one, engine)

    return ReadinessCheck(name="database", probe=probe)


def slurm_controller_check(runner: CommandRunner) -> ReadinessCheck:
    """Check that ``scontrol ping`` reports at least one controller UP."""

    async def probe() -> None:
        try:
            statuses = await asyncio.to_thread(ping_controller, runner)
        except SlurmError as exc:
            raise ReadinessFailure(_one_line(str(exc))) from exc
        if not any(status.is_up for status in statuses):
            down = ", ".join(f"{status.role} at {status.host} is DOWN" for status in statuses)
            raise ReadinessFailure(f"no controller is up: {down}")

    return ReadinessCheck(name="slurm", probe=probe)


def _select_one(engine: Engine) -> None:
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        # The DBAPI error is the informative part; SQLAlchemy's wrapper adds SQL and links.
        cause = getattr(exc, "orig", None) or exc
        raise ReadinessFailure(_one_line(str(cause))) from exc


def _one_line(message: str) -> str:
    first = next((line.strip() for line in message.splitlines() if line.strip()), "")
    if len(first) > MAX_MESSAGE_CHARS:
        return first[: MAX_MESSAGE_CHARS - 1] + "…"
    return first or "failed without a message"
