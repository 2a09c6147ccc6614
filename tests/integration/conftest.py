"""Fixtures backed by the real test services that `dev/test-services up` starts.

Databases and object storage here are never faked: a missing or unreachable
service fails the test with instructions, it does not skip it.

Fixtures:
  database_url           str, parametrized: `sqlite` (file in tmp_path) and
                         `postgres` (a fresh schema per test, dropped afterwards)
  sqlite_database_url    str, the sqlite variant alone
  postgres_database_url  str, the postgres variant alone
  storage                Storage(fs, root), parametrized: `file` and `s3`
  local_storage          Storage over a local directory in tmp_path
  s3_storage             Storage over a unique prefix of the test bucket, removed afterwards
  s3_settings            S3Settings(endpoint, key, secret, bucket) from the environment
  storage_config         the gateway's StorageConfig for gateway_fixtures: a local directory
                         (tests.integration.storage_fixtures overrides it with both backends)

Every test under this directory is marked `integration`; tests that reach
PostgreSQL or S3 are also marked `postgres` / `s3`, so `-m postgres` selects them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import botocore.exceptions
import fsspec
import pytest
import s3fs
import sqlalchemy as sa

from gateway.config import StorageConfig

SERVICES_HINT = (
    "start the test services with `make test-services` (or `dev/test-services up`) "
    'and load their settings with `eval "$(dev/test-services env)"`'
)

# Fixtures whose use means a test talks to that service, for marker selection.
# The parametrized fixtures carry their markers on their params instead.
_SERVICE_MARKERS = {
    "postgres_database_url": "postgres",
    "s3_settings": "s3",
}

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # This hook sees the whole session's items, not just this directory's.
    for item in items:
        if _HERE not in item.path.parents:
            continue
        item.add_marker(pytest.mark.integration)
        for fixture_name, marker in _SERVICE_MARKERS.items():
            if fixture_name in item.fixturenames:
                item.add_marker(marker)


def _required_env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set; {SERVICES_HINT}", pytrace=False)
    return value


# --- databases -----------------------------------------------------------------


@pytest.fixture
def sqlite_database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'test.db'}"


@pytest.fixture(scope="session")
def _postgres_admin_engine() -> Iterator[sa.Engine]:
    url = _required_env("SGW_TEST_POSTGRES_URL")
    engine = sa.create_engine(url)
    try:
        with engine.connect():
            pass
    except sa.exc.OperationalError as exc:
        engine.dispose()
        pytest.fail(f"cannot connect to PostgreSQL at {url}: {exc.orig}; {SERVICES_HINT}", pytrace=False)
    yield engine
    engine.dispose()


@pytest.fixture
def postgres_database_url(_postgres_admin_engine: sa.Engine) -> Iterator[str]:
    """URL of the test database with `search_path` set to a schema of this test's own.

    A schema is much cheaper than a database per test and isolates just as well
    for unqualified table names. Connections are tagged with the schema name as
    application_name so that ones the test leaked can be ended before the drop,
    which would otherwise wait on their locks.
    """
    schema = f"test_{uuid.uuid4().hex[:16]}"
    with _postgres_admin_engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    url = _postgres_admin_engine.url.update_query_dict(
        {"options": f"-csearch_path={schema}", "application_name": schema}
    )
    yield url.render_as_string(hide_password=False)
    with _postgres_admin_engine.begin() as conn:
        conn.execute(
            sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = :name"),
            {"name": schema},
        )
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
def database_url(request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue(f"{request.param}_database_url")


# --- object storage ------------------------------------------------------------


class Storage(NamedTuple):
    fs: fsspec.AbstractFileSystem
    root: str  # path for `fs`, without protocol; the test owns everything below it


class S3Settings(NamedTuple):
    endpoint: str
    key: str
    secret: str
    bucket: str


@pytest.fixture(scope="session")
def s3_settings() -> S3Settings:
    return S3Settings(
        endpoint=_required_env("SGW_TEST_S3_ENDPOINT"),
        key=_required_env("SGW_TEST_S3_KEY"),
        secret=_required_env("SGW_TEST_S3_SECRET"),
        bucket=_required_env("SGW_TEST_S3_BUCKET"),
    )


@pytest.fixture(scope="session")
def _s3_filesystem(s3_settings: S3Settings) -> s3fs.S3FileSystem:
    fs = s3fs.S3FileSystem(
        key=s3_settings.key,
        secret=s3_settings.secret,
        client_kwargs={"endpoint_url": s3_settings.endpoint, "region_name": "us-east-1"},
        # A bare IP endpoint has no per-bucket host names.
        config_kwargs={"s3": {"addressing_style": "path"}, "retries": {"max_attempts": 2}},
        # Listings must show what the server holds now, not what this process saw.
        use_listings_cache=False,
        skip_instance_cache=True,
    )
    try:
        fs.ls(s3_settings.bucket)
    except (OSError, botocore.exceptions.BotoCoreError) as exc:
        pytest.fail(
            f"cannot list bucket {s3_settings.bucket} at {s3_settings.endpoint}: {exc}; {SERVICES_HINT}",
            pytrace=False,
        )
    return fs


@pytest.fixture
def s3_storage(_s3_filesystem: s3fs.S3FileSystem, s3_settings: S3Settings) -> Iterator[Storage]:
    root = f"{s3_settings.bucket}/test-{uuid.uuid4().hex}"
    yield Storage(_s3_filesystem, root)
    _remove_s3_prefix(_s3_filesystem, root)


def _remove_s3_prefix(fs: s3fs.S3FileSystem, root: str) -> None:
    objects = fs.find(root)
    if objects:
        fs.rm(objects)
    # SeaweedFS keeps a folder entry for each prefix that a key created and lists
    # it even once empty; deleting the key "<folder>/" removes it (on AWS S3 that
    # is a no-op). Deepest first, so every folder is empty when it goes.
    for folder, _, _ in fs.walk(root, topdown=False):
        bucket, key, _ = fs.split_path(folder)
        fs.call_s3("delete_object", Bucket=bucket, Key=f"{key}/")


@pytest.fixture
def storage_config(tmp_path: Path) -> StorageConfig:
    return StorageConfig(url=(tmp_path / "storage").as_uri())


@pytest.fixture
def local_storage(tmp_path: Path) -> Storage:
    root = tmp_path / "storage"
    root.mkdir()
    # auto_mkdir: writing a file creates its parent directories, as a key does on S3.
    return Storage(fsspec.filesystem("file", auto_mkdir=True, skip_instance_cache=True), str(root))


@pytest.fixture(
    params=[
        pytest.param("local_storage", id="file"),
        pytest.param("s3_storage", id="s3", marks=pytest.mark.s3),
    ]
)
def storage(request: pytest.FixtureRequest) -> Storage:
    return request.getfixturevalue(request.param)
