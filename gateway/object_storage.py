"""The gateway's ObjectStore, built from the storage configuration at start-up."""

from __future__ import annotations

from pathlib import Path

from gateway.config import ConfigError, StorageConfig
from staging.object_store import ObjectStore, ObjectStoreSettings


def object_store_from_config(config: StorageConfig) -> ObjectStore:
    """The store for ``config`` (reads the S3 secret file; no network I/O).

    Raises ConfigError naming the key when the URL or the secret file is unusable.
    """
    secret = None
    if config.s3.secret_access_key_path is not None:
        try:
            secret = Path(config.s3.secret_access_key_path).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"storage.s3.secret_access_key_path: cannot read it ({exc.strerror})") from exc
    settings = ObjectStoreSettings(
        url=config.url,
        endpoint_url=config.s3.endpoint_url,
        region=config.s3.region,
        access_key_id=config.s3.access_key_id,
        secret_access_key=secret,
    )
    try:
        return ObjectStore(settings)
    except ValueError as exc:
        raise ConfigError(f"storage.url: {exc}") from exc
