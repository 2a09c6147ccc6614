import pytest

from gateway.config import ConfigError
from gateway.database import normalized_database_url


def test_bare_postgresql_selects_psycopg3() -> None:
    assert normalized_database_url("postgresql://gw@db/gateway").drivername == "postgresql+psycopg"


def test_explicit_driver_is_kept() -> None:
    assert normalized_database_url("sqlite:///var/gateway.db").drivername == "sqlite"


def test_invalid_url_does_not_echo_it() -> None:
    with pytest.raises(ConfigError, match=r"database\.url") as excinfo:
        normalized_database_url("not a url with s3cret")
    assert "s3cret" not in str(excinfo.value)
