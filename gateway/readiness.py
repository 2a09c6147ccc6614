"""Readiness checks: named async probes, run together, reported per check."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

Probe = Callable[[], Coroutine[Any, Any, None]]


class ReadinessFailure(Exception):
    """Raised by a probe; the message is short and safe to show to clients."""


@dataclass(frozen=True, slots=True)
class ReadinessCheck:
    """A dependency the gateway needs before it can serve traffic."""

    name: str
    probe: Probe


@dataclass(frozen=True, slots=True)
class CheckOutcome:
    """Result of one check: ``failure`` is None when it passed."""

    name: str
    failure: str | None = None

    @property
    def passed(self) -> bool:
        """Whether the check passed."""
        return self.failure is None


class ServiceNotReady(Exception):
    """At least one readiness check failed."""

    def __init__(self, failed: Sequence[CheckOutcome]) -> None:
        """``failed`` are the outcomes that did not pass."""
        self.failed = tuple(failed)
        super().__init__(", ".join(outcome.name for outcome in self.failed))


async def run_readiness_checks(checks: Sequence[ReadinessCheck]) -> list[CheckOutcome]:
    """Run every check concurrently and return their outcomes in the given order."""
    return list(await asyncio.gather(*(_run_check(check) for check in checks)))


async def _run_check(check: ReadinessCheck) -> CheckOutcome:
    try:
        await check.probe()
    except ReadinessFailure as exc:
        logger.warning("readiness check %s failed: %s", check.name, exc)
        return CheckOutcome(name=check.name, failure=str(exc))
    except Exception as exc:
        # A buggy probe must not take the endpoint down; hide its internals from clients.
        logger.exception("readiness check %s raised unexpectedly", check.name)
        return CheckOutcome(name=check.name, failure=f"unexpected {type(exc).__name__}")
    return CheckOutcome(name=check.name)
