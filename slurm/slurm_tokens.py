"""Mint short-lived Slurm JWTs (what ``scontrol token`` gives) for slurmrestd, one per Unix user.

Slurm's auth/jwt accepts HS256 tokens signed with the cluster's key whose ``sun`` claim names
the user the request runs as, so a gateway holding the key acts as any user without being
root on the controller. Tokens are cached per user and re-minted shortly before they expire.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

import jwt

from slurm.errors import SlurmUnavailable

# A token lives this long; short, because whoever reads one can act as that user until exp.
DEFAULT_LIFESPAN_S = 300
# A cached token is replaced once less than this is left, so none expires in flight.
DEFAULT_RENEW_BEFORE_S = 60
# User names go into an HTTP header and a signed claim: POSIX portable names only (root too).
_USER_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}", re.ASCII)


class SlurmTokenMinter:
    """Mint and cache per-user HS256 Slurm tokens signed with the cluster's JWT key."""

    def __init__(
        self,
        key_path: Path,
        *,
        lifespan_s: int = DEFAULT_LIFESPAN_S,
        renew_before_s: int = DEFAULT_RENEW_BEFORE_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``key_path`` is read on first use (it is root-only; reading it late keeps start-up cheap)."""
        if renew_before_s >= lifespan_s:
            raise ValueError("renew_before_s must be shorter than lifespan_s")
        self._key_path = key_path
        self._lifespan_s = lifespan_s
        self._renew_before_s = renew_before_s
        self._clock = clock
        self._key: bytes | None = None
        self._cache: dict[str, tuple[str, int]] = {}
        self._lock = threading.Lock()

    def token_for(self, user: str) -> str:
        """A token for ``user`` valid for at least ``renew_before_s`` more seconds.

        Raises ValueError for a name that is not a portable Unix user name and
        SlurmUnavailable when the key cannot be read.
        """
        if not _USER_NAME.fullmatch(user):
            raise ValueError(f"not a valid Unix user name: {user!r}")
        now = int(self._clock())
        with self._lock:
            cached = self._cache.get(user)
            if cached is not None and cached[1] - now > self._renew_before_s:
                return cached[0]
            expires = now + self._lifespan_s
            token = jwt.encode(
                {"sun": user, "iat": now, "exp": expires}, self._signing_key(), algorithm="HS256"
            )
            self._cache[user] = (token, expires)
            return token

    def _signing_key(self) -> bytes:
        if self._key is None:
            try:
                self._key = self._key_path.read_bytes()
            except OSError as exc:
                raise SlurmUnavailable(
                    f"cannot read the Slurm JWT key {self._key_path}: {exc.strerror}"
                ) from exc
            if not self._key:
                raise SlurmUnavailable(f"the Slurm JWT key {self._key_path} is empty")
        return self._key
