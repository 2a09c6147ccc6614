"""Bring the gateway's database schema up to date with alembic, driven from code.

The alembic environment and revisions live in the ``gateway.migrations`` package; there is no
alembic.ini. The app never creates tables itself: ``slurm-gateway migrate`` (or
``migrate_to_head``) must run first.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from gateway.database import create_database_engine, normalized_database_url

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def alembic_config(database_url: str | None = None) -> Config:
    """An alembic Config for the gateway's migrations, optionally aimed at ``database_url``."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if database_url is not None:
        rendered = normalized_database_url(database_url).render_as_string(hide_password=False)
        # Config options go through configparser interpolation, where "%" is special.
        config.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
    return config


def migrate_to_head(engine_or_url: Engine | str) -> None:
    """Apply every pending revision; a database already at head is left untouched."""
    if isinstance(engine_or_url, Engine):
        _upgrade(engine_or_url)
        return
    engine = create_database_engine(engine_or_url)
    try:
        _upgrade(engine)
    finally:
        engine.dispose()


def head_revision() -> str:
    """The newest revision id shipped with this version of the gateway."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError(f"no alembic revisions under {MIGRATIONS_DIR}")
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (None for a database never migrated)."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def _upgrade(engine: Engine) -> None:
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
