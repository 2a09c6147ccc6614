"""Schema migrations on SQLite and PostgreSQL (the `database_url` fixture runs both)."""

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from litestar.testing import TestClient

import accounting.ledger_models  # noqa: F401  (Base.metadata must hold the accounting tables)
from gateway.app import create_app
from gateway.cli import main
from gateway.config import ENV_DATABASE_URL, ENV_STATE_DIR, load_config
from gateway.database import create_database_engine
from gateway.schema_migrations import alembic_config, current_revision, head_revision, migrate_to_head
from gateway.storage_models import Base, Job, JobEvent, Tenant

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
    "job_events",
    "usage_records",
    "ledger_entries",
    "rate_cards",
    "tenant_budgets",
    "accounting_cursors",
    "leader_leases",
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


def add_tenant_and_job(session: sa.orm.Session, job_id: str = "j1") -> Job:
    now = datetime.now(UTC)
    if session.get(Tenant, "t1") is None:
        session.add(
            Tenant(
                id="t1",
                slurm_account="acct1",
                allowed_qos=[],
                allowed_partitions=[],
                created_at=now,
                updated_at=now,
            )
        )
        session.flush()
    job = Job(
        id=job_id,
        tenant_id="t1",
        owner="alice",
        unix_user="alice",
        name="n",
        spec={},
        spec_digest="d",
        state="accepted",
        created_at=now,
        updated_at=now,
    )
    session.add(job)
    session.commit()
    return job


def events(engine: sa.Engine) -> list[tuple[str, str, str, int, str | None, dict | None]]:
    with sa.orm.Session(engine) as session:
        rows = session.scalars(sa.select(JobEvent).order_by(JobEvent.id)).all()
        return [(e.job_id, e.kind, e.state, e.attempt, e.state_reason, e.progress) for e in rows]


def test_triggers_record_job_events_for_relevant_changes_only(engine: sa.Engine) -> None:
    migrate_to_head(engine)
    before = datetime.now(UTC)
    with sa.orm.Session(engine) as session:
        job = add_tenant_and_job(session)
        job.state, job.state_reason = "pending", "Priority"
        session.commit()
        job.updated_at = datetime.now(UTC)  # nothing an event shows
        job.lease_owner = "w1"
        session.commit()
        job.progress = {"fraction": 0.5, "message": "half", "metrics": {}}
        session.commit()
        job.progress = {"fraction": 0.5, "message": "half", "metrics": {}}  # the same value again
        job.attempt, job.state, job.exit_code = 2, "accepted", None
        session.commit()
    assert events(engine) == [
        ("j1", "accepted", "accepted", 1, None, None),
        ("j1", "state", "pending", 1, "Priority", None),
        ("j1", "progress", "pending", 1, "Priority", {"fraction": 0.5, "message": "half", "metrics": {}}),
        ("j1", "state", "accepted", 2, "Priority", {"fraction": 0.5, "message": "half", "metrics": {}}),
    ]
    with sa.orm.Session(engine) as session:
        first = session.scalars(sa.select(JobEvent).order_by(JobEvent.id)).first()
        assert (first.tenant_id, first.owner, first.parent_id) == ("t1", "alice", None)
        created = first.created_at.replace(tzinfo=first.created_at.tzinfo or UTC)
        assert before - timedelta(seconds=1) <= created <= datetime.now(UTC) + timedelta(seconds=1)


def test_a_rolled_back_change_records_no_event(engine: sa.Engine) -> None:
    migrate_to_head(engine)
    with sa.orm.Session(engine) as session:
        job = add_tenant_and_job(session)
        job.state = "running"
        session.flush()
        session.rollback()
    assert [kind for _, kind, *_ in events(engine)] == ["accepted"]


def test_downgrade_drops_the_events_table_and_triggers(engine: sa.Engine) -> None:
    migrate_to_head(engine)
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0004")
    assert "job_events" not in table_names(engine)
    assert "progress" not in {column["name"] for column in sa.inspect(engine).get_columns("jobs")}
    with sa.orm.Session(engine) as session:
        # The triggers are gone with the table: writing a job does not fail.
        session.execute(
            sa.text(
                "INSERT INTO tenants (id, slurm_account, allowed_qos, allowed_partitions, created_at,"
                " updated_at) VALUES ('t1', 'a1', '[]', '[]', :now, :now)"
            ),
            {"now": datetime.now(UTC)},
        )
        session.execute(
            sa.text(
                "INSERT INTO jobs (id, tenant_id, owner, unix_user, name, spec, spec_digest, kind,"
                " desired_state, state, attempt, submit_attempts, created_at, updated_at) VALUES"
                " ('j1', 't1', 'alice', 'alice', 'n', '{}', 'd', 'job', 'run', 'accepted', 1, 0, :now, :now)"
            ),
            {"now": datetime.now(UTC)},
        )
        session.commit()
    migrate_to_head(engine)
    assert current_revision(engine) == head_revision()


ACCOUNTING_TABLES = {
    "usage_records",
    "ledger_entries",
    "rate_cards",
    "tenant_budgets",
    "accounting_cursors",
    "leader_leases",
}


def test_downgrade_drops_the_accounting_tables_and_keeps_job_events(engine: sa.Engine) -> None:
    migrate_to_head(engine)
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0005")
    assert table_names(engine) == GATEWAY_TABLES - ACCOUNTING_TABLES
    with sa.orm.Session(engine) as session:
        add_tenant_and_job(session)
    # 0006 leaves the jobs table alone: its event triggers still fire.
    assert [kind for _, kind, *_ in events(engine)] == ["accepted"]
    migrate_to_head(engine)
    assert table_names(engine) == GATEWAY_TABLES
