"""The test services behind the integration fixtures are real and isolated per test."""

from __future__ import annotations

import hashlib
import os
import posixpath
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa

if TYPE_CHECKING:
    from tests.integration.conftest import Storage

metadata = sa.MetaData()
notes = sa.Table(
    "notes",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("body", sa.String(200), nullable=False),
)


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(database_url)
    yield engine
    engine.dispose()


def all_bodies(engine: sa.Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(sa.select(notes.c.body).order_by(notes.c.id)).scalars())


def test_database_variant_is_the_backend_it_names(engine: sa.Engine, request: pytest.FixtureRequest) -> None:
    variant = request.node.callspec.params["database_url"]
    version_query = {"sqlite": "SELECT 'SQLite ' || sqlite_version()", "postgres": "SELECT version()"}[
        variant
    ]
    with engine.connect() as conn:
        version = conn.execute(sa.text(version_query)).scalar_one()
    assert engine.dialect.name == {"sqlite": "sqlite", "postgres": "postgresql"}[variant]
    assert version.startswith({"sqlite": "SQLite ", "postgres": "PostgreSQL "}[variant])


def test_database_starts_empty_and_round_trips_rows(engine: sa.Engine) -> None:
    assert sa.inspect(engine).get_table_names() == []

    metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(notes.insert(), [{"body": "alpha"}, {"body": "beta"}])

    assert sa.inspect(engine).get_table_names() == ["notes"]
    assert all_bodies(engine) == ["alpha", "beta"]


def test_database_rollback_discards_the_transaction(engine: sa.Engine) -> None:
    metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(notes.insert(), {"body": "committed"})

    with engine.connect() as conn:
        transaction = conn.begin()
        conn.execute(notes.insert(), {"body": "rolled back"})
        assert conn.execute(sa.select(sa.func.count()).select_from(notes)).scalar_one() == 2
        transaction.rollback()

    assert all_bodies(engine) == ["committed"]


def test_postgres_tables_land_in_the_test_private_schema(postgres_database_url: str) -> None:
    engine = sa.create_engine(postgres_database_url)
    try:
        metadata.create_all(engine)
        with engine.connect() as conn:
            schema = conn.execute(sa.text("SELECT current_schema()")).scalar_one()
            table_schemas = (
                conn.execute(
                    sa.text("SELECT table_schema FROM information_schema.tables WHERE table_name = 'notes'")
                )
                .scalars()
                .all()
            )
    finally:
        engine.dispose()
    assert schema.startswith("test_")
    assert table_schemas == [schema]


def names_under(storage: Storage, directory: str) -> list[str]:
    return sorted(posixpath.basename(path.rstrip("/")) for path in storage.fs.ls(directory, detail=False))


def test_storage_write_read_list_delete(storage: Storage) -> None:
    fs, root = storage
    fs.pipe_file(f"{root}/reports/one.txt", b"first")
    fs.pipe_file(f"{root}/reports/two.txt", b"second")

    assert fs.cat_file(f"{root}/reports/one.txt") == b"first"
    assert fs.size(f"{root}/reports/two.txt") == len(b"second")
    assert names_under(storage, f"{root}/reports") == ["one.txt", "two.txt"]

    fs.rm_file(f"{root}/reports/one.txt")

    assert not fs.exists(f"{root}/reports/one.txt")
    assert names_under(storage, f"{root}/reports") == ["two.txt"]
    with pytest.raises(FileNotFoundError):
        fs.cat_file(f"{root}/reports/one.txt")


def test_storage_round_trips_a_5_mib_object(storage: Storage) -> None:
    fs, root = storage
    path = f"{root}/large/blob.bin"
    chunk_size = 1024 * 1024
    written = hashlib.sha256()
    # Streamed in 1 MiB chunks so S3 takes the buffered, multipart-capable write path.
    with fs.open(path, "wb") as stream:
        for _ in range(5):
            chunk = os.urandom(chunk_size)
            written.update(chunk)
            stream.write(chunk)

    read = hashlib.sha256()
    with fs.open(path, "rb") as stream:
        while chunk := stream.read(chunk_size):
            read.update(chunk)

    assert fs.size(path) == 5 * chunk_size
    assert read.hexdigest() == written.hexdigest()


def test_s3_refuses_a_wrong_secret(s3_storage: Storage) -> None:
    fs, root = s3_storage
    fs.pipe_file(f"{root}/secret.txt", b"x")
    impostor = type(fs)(**{**fs.storage_options, "secret": "not-the-secret"})

    with pytest.raises(PermissionError):
        impostor.cat_file(f"{root}/secret.txt")
