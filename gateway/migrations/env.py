"""Alembic environment: runs revisions on the connection gateway.schema_migrations hands over.

There is no alembic.ini: gateway.schema_migrations builds the Config in code and passes an
open connection in ``config.attributes["connection"]``; when it is absent (the ``alembic``
command pointed at this directory), an engine is built from ``sqlalchemy.url``.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

import accounting.ledger_models  # noqa: F401  (registers the accounting tables on Base.metadata)
from gateway.database import create_database_engine
from gateway.storage_models import Base


def _run_on(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds tables for later revisions.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run_on(connection)
        return
    engine = create_database_engine(context.config.get_main_option("sqlalchemy.url") or "")
    try:
        with engine.connect() as owned_connection:
            _run_on(owned_connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    context.configure(
        url=context.config.get_main_option("sqlalchemy.url"),
        target_metadata=Base.metadata,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    _run_online()
