"""Schema migrations on SQLite and PostgreSQL (the `database_url` fixture runs both)."""

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from litestar.testing import TestClient

from gateway.app import create_app
from gateway.cli import main
from gateway.config import ENV_DATABASE_URL, ENV_STATE_DIR, load_config
from gateway.database import create_database_engine
from gateway.schema_migrations import current_revision, head_revision, migrate_to_head
from gateway.storage_models import Base, Tenant

GATEWAY_TABLES = {
    "tenants",
    "tenant_members",
    "jobs",
    "job_labels",
    "job_attempts",
    "job_step_dependencies",
    "stored_files",
    "storage_reservations",
    "multipart_uploads",
    "job_staging",
}


def table_names(engine: sa.Engine) -> set[str]:
    return set(sa.inspect(engine).get_table_names()) - {"alembic_version"}


@pytest.fixture
def engine(database_url: str):
    engine = create_database_engine(database_url)
    yield engine
    engine.dispose()


def test_upgrade_creates_exactly_the_model_schema(engine: sa.Engine) -> None:
    assert current_revision(engine) is None
    migrate_to_head(engine)
    assert current_revision(engine) == head_revision()
    assert table_names(engine) == GATEWAY_TABLES
    with engine.connect() as connection:
        differences = compare_metadata(
            MigrationContext.configure(connection, opts={"compare_type": True}), Base.metadata
        )
    assert differences == []


def test_second_upgrade_is_a_no_op_and_keeps_data(engine: sa.Engine, database_url: str) -> None:
    migrate_to_head(database_url)
    now = datetime.now(UTC)
    with sa.orm.Session(engine) as session:
        session.add(
            Tenant(
                id="t1",
                slurm_account="acct1",
                allowed_qos=["normal"],
                allowed_partitions=["cpu"],
                created_at=now,
                updated_at=now,
            )
        )
        session.commit()
    migrate_to_head(database_url)
    assert current_revision(engine) == head_revision()
    with sa.orm.Session(engine) as session:
        tenant = session.get(Tenant, "t1")
        assert tenant is not None
        assert tenant.allowed_qos == ["normal"]


def test_timestamps_keep_their_instant(engine: sa.Engine) -> None:
    migrate_to_head(engine)
    moment = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
    with sa.orm.Session(engine) as session:
        session.add(
            Tenant(
                id="t1",
                slurm_account="acct1",
                allowed_qos=[],
                allowed_partitions=[],
                created_at=moment,
                updated_at=moment,
            )
        )
        session.commit()
    with sa.orm.Session(engine) as session:
        stored = session.get(Tenant, "t1").created_at
    # PostgreSQL returns it aware; SQLite returns the UTC wall time without a zone.
    assert stored.replace(tzinfo=stored.tzinfo or UTC) == moment


def test_migrate_command(database_url: str, tmp_path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv(ENV_STATE_DIR, str(tmp_path))
    monkeypatch.setenv(ENV_DATABASE_URL, database_url)
    assert main(["migrate"]) == 0
    assert main(["migrate"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1].endswith(f"at revision {head_revision()}")
    assert "password" not in out[-1]


def test_app_start_does_not_create_tables(engine: sa.Engine, database_url: str, tmp_path) -> None:
    config = load_config(None, {ENV_STATE_DIR: str(tmp_path), ENV_DATABASE_URL: database_url})
    with TestClient(create_app(config)) as client:
        assert client.get("/healthz").status_code == 200
    assert table_names(engine) == set()
