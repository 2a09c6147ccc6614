from pathlib import Path

import pytest
from sqlalchemy import text

from gateway.config import ConfigError
from gateway.database import create_database_engine, normalized_database_url


def test_bare_postgresql_selects_psycopg3() -> None:
    assert normalized_database_url("postgresql://gw@db/gateway").drivername == "postgresql+psycopg"


def test_explicit_driver_is_kept() -> None:
    assert normalized_database_url("sqlite:///var/gateway.db").drivername == "sqlite"


def test_invalid_url_does_not_echo_it() -> None:
    with pytest.raises(ConfigError, match=r"database\.url") as excinfo:
        normalized_database_url("not a url with s3cret")
    assert "s3cret" not in str(excinfo.value)


def test_sqlite_connections_use_wal_and_keep_full_sync(tmp_path: Path) -> None:
    engine = create_database_engine(f"sqlite:///{tmp_path / 'gateway.db'}")
    try:
        with engine.connect() as connection:
            journal_mode = connection.execute(text("PRAGMA journal_mode")).scalar()
            synchronous = connection.execute(text("PRAGMA synchronous")).scalar()
    finally:
        engine.dispose()
    # 2 is FULL: a committed submission claim survives a power loss.
    assert (journal_mode, synchronous) == ("wal", 2)
