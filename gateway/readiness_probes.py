"""The gateway's standard readiness checks: database and Slurm controller."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from gateway.readiness import ReadinessCheck, ReadinessFailure
from slurm.command_runner import CommandRunner
from slurm.controller_ping import ping_controller
from slurm.errors import SlurmError

# Readiness messages go to clients and logs; keep them to one short line.
MAX_MESSAGE_CHARS = 200
# Probes may come many times a second from several orchestrators and load balancers; slurmctld
# is asked at most once per this many seconds, whatever the request rate.
CONTROLLER_PING_MAX_AGE_S = 5.0


def database_check(engine: Engine) -> ReadinessCheck:
    """Check that ``engine`` can open a connection and run ``SELECT 1``."""

    async def probe() -> None:
        await asyncio.to_thread(_select_one, engine)

    return ReadinessCheck(name="database", probe=probe)


def slurm_controller_check(
    runner: CommandRunner,
    *,
    max_age_s: float = CONTROLLER_PING_MAX_AGE_S,
    clock: Callable[[], float] = time.monotonic,
) -> ReadinessCheck:
    """Check that ``scontrol ping`` reports at least one controller UP.

    The outcome is shared by every request for ``max_age_s`` seconds and concurrent probes
    wait for the one ping in flight, so /readyz never turns request load into Slurm load.
    """
    # A thread lock, not an asyncio one: the check outlives any one event loop (tests, reloads).
    lock = threading.Lock()
    last: dict[str, float | str | None] = {}

    def cached_failure() -> str | None:
        with lock:
            checked_at = last.get("at")
            if not isinstance(checked_at, float) or clock() - checked_at >= max_age_s:
                last["failure"] = _controller_failure(runner)
                last["at"] = clock()
            failure = last["failure"]
            return failure if isinstance(failure, str) else None

    async def probe() -> None:
        failure = await asyncio.to_thread(cached_failure)
        if failure is not None:
            raise ReadinessFailure(failure)

    return ReadinessCheck(name="slurm", probe=probe)


def _controller_failure(runner: CommandRunner) -> str | None:
    try:
        statuses = ping_controller(runner)
    except SlurmError as exc:
        return _one_line(str(exc))
    if not any(status.is_up for status in statuses):
        down = ", ".join(f"{status.role} at {status.host} is DOWN" for status in statuses)
        return f"no controller is up: {down}"
    return None


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
