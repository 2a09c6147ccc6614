"""SQLAlchemy engine construction from the configured database URL."""

from __future__ import annotations

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from gateway.config import ConfigError


def normalized_database_url(url: str) -> URL:
    """Parse ``url``; a bare ``postgresql://`` selects psycopg 3, the driver we ship.

    Raises ConfigError (without echoing the URL, which may hold a password).
    """
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError("database.url: not a valid SQLAlchemy database URL") from exc
    if parsed.drivername == "postgresql":
        return parsed.set(drivername="postgresql+psycopg")
    return parsed


def redacted_database_url(url: str) -> str:
    """``url`` as written, with any password replaced by ``***`` (for display)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError as exc:
        raise ConfigError("database.url: not a valid SQLAlchemy database URL") from exc


def create_database_engine(url: str) -> Engine:
    """Create the (lazily connecting) engine for ``url``."""
    return create_engine(normalized_database_url(url))
