"""Issue gateway bearer tokens (for `slurm-gateway token` and tests)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import jwt

from gateway.config import AuthConfig
from gateway.principal import Role


def mint_token(
    auth_config: AuthConfig,
    secret_or_key: Any,
    *,
    user: str,
    tenant: str | None,
    roles: Iterable[Role],
    ttl_s: float,
    key_id: str | None = None,
    now: float | None = None,
) -> str:
    """Sign a token that gateway.auth accepts under ``auth_config``.

    ``secret_or_key`` is the HS256 secret (bytes) or the RS256 private key (PEM or key object);
    ``key_id`` sets the ``kid`` header so a verifier with several JWKS keys picks the right one.
    ``tenant`` is None for cluster-wide roles (admin, finance).
    """
    issued_at = int(now if now is not None else time.time())
    claims: dict[str, Any] = {
        "sub": user,
        "roles": sorted(set(roles)),
        "iss": auth_config.issuer,
        "aud": auth_config.audience,
        "iat": issued_at,
        "exp": issued_at + int(ttl_s),
    }
    if tenant is not None:
        claims["tenant"] = tenant
    headers = {"kid": key_id} if key_id is not None else None
    return jwt.encode(claims, secret_or_key, algorithm=auth_config.algorithm, headers=headers)
