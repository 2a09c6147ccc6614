"""Signed, expiring part URLs for uploads to the local-directory backend.

With S3 storage clients PUT parts to presigned S3 URLs; with a local directory they PUT them to
the gateway at ``/v1/uploads/{id}/parts/{n}?expires=..&signature=..``. Such a URL carries no
bearer token: the signature is the credential. It is an HMAC-SHA256, under a key only the
gateway knows, of the upload id, the part number and the expiry, so it opens exactly one part
of one upload until it expires and cannot be altered into anything else.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path
from urllib.parse import urlencode

from gateway.config import ConfigError, GatewayConfig
from gateway.domain_errors import PermissionDenied

SIGNING_KEY_FILENAME = "upload-signing.key"
KEY_BYTES = 32
# Domain separation: this key signs nothing else, but say what is signed all the same.
_PURPOSE = b"slurm-gateway upload part v1"


class UploadSigner:
    """Signs and checks part URLs with one secret key."""

    def __init__(self, key: bytes) -> None:
        """``key``: at least 32 secret random bytes."""
        if len(key) < KEY_BYTES:
            raise ValueError(f"the upload signing key needs at least {KEY_BYTES} bytes")
        self._key = key

    def signature(self, upload_id: str, part_number: int, expires: int) -> str:
        """Hex HMAC-SHA256 over the upload id, the part number and the expiry (epoch seconds)."""
        message = b"\n".join((_PURPOSE, upload_id.encode(), str(part_number).encode(), str(expires).encode()))
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def query(self, upload_id: str, part_number: int, expires: int) -> str:
        """The URL query string (``expires=..&signature=..``) that opens this part until ``expires``."""
        return urlencode({"expires": expires, "signature": self.signature(upload_id, part_number, expires)})

    def verify(self, upload_id: str, part_number: int, expires: int, signature: str, *, now: float) -> None:
        """Raise PermissionDenied unless ``signature`` is this part's and ``expires`` is not past."""
        expected = self.signature(upload_id, part_number, expires)
        # Constant time: a timing side channel must not reveal how much of a guess was right.
        if not hmac.compare_digest(expected.encode(), signature.encode()):
            raise PermissionDenied(
                "the part URL's signature is not valid; GET the upload for fresh part URLs"
            )
        if now > expires:
            raise PermissionDenied("the part URL has expired; GET the upload for fresh part URLs")


def upload_signing_key_path(config: GatewayConfig) -> Path:
    """``<state_dir>/upload-signing.key``."""
    return Path(config.state_dir) / SIGNING_KEY_FILENAME


def ensure_upload_signing_key(path: Path) -> bytes:
    """The key in ``path``, created (32 random bytes, mode 0600) when absent.

    Raises ConfigError when an existing file is too short to be a safe key.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        # Written aside and linked into place: a process starting at the same moment sees no
        # file or the whole key, never an empty one, and only one key ever wins.
        scratch = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
        descriptor = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(descriptor, "wb") as key_file:
                key_file.write(secrets.token_bytes(KEY_BYTES))
            os.link(scratch, path)
        except FileExistsError:
            pass
        finally:
            scratch.unlink()
    key = path.read_bytes()
    if len(key) < KEY_BYTES:
        raise ConfigError(
            f"{path} holds {len(key)} bytes; the upload signing key needs {KEY_BYTES}"
            " (delete the file to have a new one generated)"
        )
    return key


def upload_signer_from_config(config: GatewayConfig) -> UploadSigner:
    """The signer over ``<state_dir>/upload-signing.key`` (created on first use)."""
    return UploadSigner(ensure_upload_signing_key(upload_signing_key_path(config)))
