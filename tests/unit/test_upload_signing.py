import stat
from pathlib import Path

import pytest

from gateway.config import ConfigError
from gateway.domain_errors import PermissionDenied
from gateway.upload_signing import KEY_BYTES, UploadSigner, ensure_upload_signing_key

UPLOAD = "0123456789abcdef0123456789abcdef"
NOW = 1_800_000_000.0


@pytest.fixture
def signer() -> UploadSigner:
    return UploadSigner(b"k" * KEY_BYTES)


def test_a_signature_verifies_until_it_expires(signer: UploadSigner) -> None:
    expires = int(NOW) + 60
    signature = signer.signature(UPLOAD, 2, expires)
    signer.verify(UPLOAD, 2, expires, signature, now=NOW)
    with pytest.raises(PermissionDenied, match="expired"):
        signer.verify(UPLOAD, 2, expires, signature, now=expires + 1)


@pytest.mark.parametrize(
    ("upload_id", "part_number", "expires_delta"),
    [("f" * 32, 2, 0), (UPLOAD, 3, 0), (UPLOAD, 2, 3600)],
    ids=["other-upload", "other-part", "extended-expiry"],
)
def test_a_signature_opens_nothing_else(
    signer: UploadSigner, upload_id: str, part_number: int, expires_delta: int
) -> None:
    expires = int(NOW) + 60
    signature = signer.signature(UPLOAD, 2, expires)
    with pytest.raises(PermissionDenied, match="not valid"):
        signer.verify(upload_id, part_number, expires + expires_delta, signature, now=NOW)


def test_tampered_or_foreign_signatures_are_refused(signer: UploadSigner) -> None:
    expires = int(NOW) + 60
    signature = signer.signature(UPLOAD, 1, expires)
    tampered = ("0" if signature[0] != "0" else "1") + signature[1:]
    other_key = UploadSigner(b"x" * KEY_BYTES).signature(UPLOAD, 1, expires)
    for bad in (tampered, other_key, "", "not-hex"):
        with pytest.raises(PermissionDenied):
            signer.verify(UPLOAD, 1, expires, bad, now=NOW)


def test_query_carries_expiry_and_signature(signer: UploadSigner) -> None:
    assert signer.query(UPLOAD, 1, 1234) == f"expires=1234&signature={signer.signature(UPLOAD, 1, 1234)}"


def test_short_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        UploadSigner(b"short")


def test_key_file_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "state" / "upload-signing.key"
    key = ensure_upload_signing_key(path)
    assert len(key) == KEY_BYTES
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ensure_upload_signing_key(path) == key
    assert [entry.name for entry in path.parent.iterdir()] == ["upload-signing.key"]


def test_a_truncated_key_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "upload-signing.key"
    path.write_bytes(b"too short")
    with pytest.raises(ConfigError, match="delete the file"):
        ensure_upload_signing_key(path)
