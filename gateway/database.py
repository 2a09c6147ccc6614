"""SQLAlchemy engine construction from the configured database URL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from gateway.config import ConfigError

# The embedded database is shared by request threads and the background workers. In the
# default rollback-journal mode every reader blocks a committing writer, and SQLite's busy
# handler then sleeps in 1-25 ms steps: that, not the SQL, dominated submission latency. WAL
# lets readers and the one writer proceed together. synchronous stays FULL (one WAL fsync per
# commit, ~0.4 ms here): with NORMAL a power loss could drop a committed submission claim, and
# the submitter would then sbatch the job again without first looking it up in Slurm.
SQLITE_PRAGMAS = ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL")


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
    """Create the (lazily connecting) engine for ``url``; SQLite connections get SQLITE_PRAGMAS."""
    engine = create_engine(normalized_database_url(url))
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _apply_sqlite_pragmas)
    return engine


def _apply_sqlite_pragmas(dbapi_connection: Any, _connection_record: object) -> None:
    cursor = dbapi_connection.cursor()
    try:
        for pragma in SQLITE_PRAGMAS:
            cursor.execute(pragma)
    finally:
        cursor.close()
