"""Timestamps as the gateway stores them: timezone-aware UTC."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

# Injected wherever "now" matters, so tests can control time.
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The current time, timezone-aware UTC (what every stored timestamp uses)."""
    return datetime.now(UTC)


def ensure_utc(moment: datetime) -> datetime:
    """``moment`` as aware UTC: SQLite hands stored UTC timestamps back without a zone."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def as_utc(moment: datetime | None) -> datetime | None:
    """ensure_utc for optional timestamps."""
    return None if moment is None else ensure_utc(moment)
