"""The gateway's HS256 token secret: a file of random bytes, created once with mode 0600."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from gateway.config import ConfigError, GatewayConfig

DEFAULT_SECRET_FILENAME = "jwt_hs256.secret"
# RFC 7518 §3.2: an HS256 key must be at least as long as the hash output (32 bytes).
SECRET_BYTES = 32


def hs256_secret_path(config: GatewayConfig) -> Path:
    """``auth.hs256_secret_path``, or ``<state_dir>/jwt_hs256.secret`` when unset."""
    if config.auth.hs256_secret_path is not None:
        return Path(config.auth.hs256_secret_path)
    return Path(config.state_dir) / DEFAULT_SECRET_FILENAME


def ensure_hs256_secret(path: Path) -> bytes:
    """Return the secret in ``path``, creating it (32 random bytes, mode 0600) when absent.

    Raises ConfigError when an existing file is too short to be a safe HS256 key.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL: two processes starting at once must not both write a different secret.
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return read_hs256_secret(path)
    with os.fdopen(descriptor, "wb") as secret_file:
        secret_file.write(secrets.token_bytes(SECRET_BYTES))
    return read_hs256_secret(path)


def read_hs256_secret(path: Path) -> bytes:
    """Read an existing secret; raise ConfigError if it is shorter than 32 bytes."""
    secret = path.read_bytes()
    if len(secret) < SECRET_BYTES:
        raise ConfigError(
            f"auth.hs256_secret_path: {path} holds {len(secret)} bytes; an HS256 secret needs at least "
            f"{SECRET_BYTES} (delete the file to have a new one generated)"
        )
    return secret
