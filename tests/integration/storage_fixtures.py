"""Gateway storage on both backends: import ``storage_config`` into a test module to run its
gateway tests against a local directory and against SeaweedFS S3.

    from tests.integration.storage_fixtures import storage_config  # overrides gateway_fixtures'

The S3 variant stores under a fresh prefix of the test bucket (removed afterwards, via the
conftest's ``s3_storage``) and reads its secret from a file, as a deployment would.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import S3Config, StorageConfig

__all__ = ["s3_storage_config", "storage_config"]


def s3_storage_config(root: str, s3_settings: object, secret_dir: Path, **limits: object) -> StorageConfig:
    """A StorageConfig for S3 under ``root`` (bucket/prefix) with the test service's credentials."""
    secret_file = secret_dir / "s3-secret"
    secret_file.write_text(s3_settings.secret)  # type: ignore[attr-defined]
    return StorageConfig(
        url=f"s3://{root}",
        s3=S3Config(
            endpoint_url=s3_settings.endpoint,  # type: ignore[attr-defined]
            access_key_id=s3_settings.key,  # type: ignore[attr-defined]
            secret_access_key_path=str(secret_file),
        ),
        **limits,  # type: ignore[arg-type]
    )


@pytest.fixture(
    params=[
        pytest.param("file", id="file"),
        pytest.param("s3", id="s3", marks=pytest.mark.s3),
    ]
)
def storage_config(request: pytest.FixtureRequest, tmp_path: Path) -> StorageConfig:
    """The gateway's storage: a local directory, then SeaweedFS S3."""
    if request.param == "file":
        return StorageConfig(url=(tmp_path / "storage").as_uri())
    s3_storage = request.getfixturevalue("s3_storage")
    return s3_storage_config(s3_storage.root, request.getfixturevalue("s3_settings"), tmp_path)
