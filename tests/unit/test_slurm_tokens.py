"""Per-user Slurm JWTs: claims, caching until near expiry, refusal of odd names and keys."""

from __future__ import annotations

from pathlib import Path

import jwt
import pytest

from slurm.errors import SlurmUnavailable
from slurm.slurm_tokens import SlurmTokenMinter

KEY = b"k" * 32


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def key_path(tmp_path: Path) -> Path:
    path = tmp_path / "jwt_hs256.key"
    path.write_bytes(KEY)
    return path


def test_token_carries_slurm_claims_signed_with_the_cluster_key(key_path: Path) -> None:
    clock = FakeClock()
    token = SlurmTokenMinter(key_path, lifespan_s=300, clock=clock).token_for("alice")
    claims = jwt.decode(token, KEY, algorithms=["HS256"], options={"verify_exp": False})
    assert claims == {"sun": "alice", "iat": 1_000_000, "exp": 1_000_300}


def test_tokens_are_cached_per_user_until_near_expiry(key_path: Path) -> None:
    clock = FakeClock()
    minter = SlurmTokenMinter(key_path, lifespan_s=300, renew_before_s=60, clock=clock)
    first = minter.token_for("alice")
    assert minter.token_for("bob") != first
    clock.now += 239
    assert minter.token_for("alice") == first
    clock.now += 1
    renewed = minter.token_for("alice")
    assert renewed != first
    assert jwt.decode(renewed, KEY, algorithms=["HS256"], options={"verify_exp": False})["iat"] == 1_000_240


@pytest.mark.parametrize("name", ["", "Alice", "alice\r\nX-Evil: 1", "a" * 33, "-alice"])
def test_names_that_are_not_unix_user_names_are_refused(key_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="not a valid Unix user name"):
        SlurmTokenMinter(key_path).token_for(name)


def test_an_unreadable_key_is_unavailability(tmp_path: Path) -> None:
    with pytest.raises(SlurmUnavailable, match="cannot read the Slurm JWT key"):
        SlurmTokenMinter(tmp_path / "missing.key").token_for("alice")


def test_renewal_margin_must_be_shorter_than_the_lifespan(key_path: Path) -> None:
    with pytest.raises(ValueError, match="renew_before_s"):
        SlurmTokenMinter(key_path, lifespan_s=60, renew_before_s=60)
