"""Authentication: verify ``Authorization: Bearer <jwt>`` and provide the caller's Principal.

Tokens are HS256 (the gateway's own secret file) or RS256 (keys from a JWKS file or URL).
Every token must carry ``exp``, ``iat``, ``iss``, ``aud``, ``sub`` and ``roles``; ``tenant``
is required for tenant-scoped roles (user, tenant-admin). Route handlers declare
``principal: AuthenticatedPrincipal`` and receive it through the ``principal`` dependency
(Litestar 2.23+ wants named dependencies marked; the alias is ``NamedDependency[Principal]``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, get_args

import jwt
from litestar import Request
from litestar.di import NamedDependency, Provide

from gateway.config import ConfigError, GatewayConfig
from gateway.domain_errors import AuthenticationFailed
from gateway.expiring_cache import ExpiringLruCache
from gateway.hs256_secret import ensure_hs256_secret, hs256_secret_path
from gateway.principal import Principal, Role

logger = logging.getLogger(__name__)

AuthenticatedPrincipal = NamedDependency[Principal]

KNOWN_ROLES: frozenset[str] = frozenset(get_args(Role))
TENANT_SCOPED_ROLES: frozenset[str] = frozenset({"user", "tenant-admin"})
REQUIRED_CLAIMS = ("exp", "iat", "iss", "aud", "sub")
# How long keys fetched from a JWKS URL are trusted before being fetched again.
JWKS_CACHE_S = 300.0
# Verified tokens remembered (until their exp) so that a client polling with one token pays for
# the signature check once. Bounded in count and in token size, so in memory.
VERIFIED_TOKEN_CACHE_ENTRIES = 4096
MAX_CACHED_TOKEN_CHARS = 4096

_REASONS: tuple[tuple[type[jwt.PyJWTError], str], ...] = (
    (jwt.ExpiredSignatureError, "token expired"),
    (jwt.ImmatureSignatureError, "token not valid yet"),
    (jwt.InvalidAudienceError, "wrong audience"),
    (jwt.InvalidIssuerError, "wrong issuer"),
    (jwt.InvalidSignatureError, "bad signature"),
    (jwt.InvalidAlgorithmError, "algorithm not allowed"),
    (jwt.InvalidIssuedAtError, "invalid iat claim"),
    (jwt.exceptions.InvalidSubjectError, "invalid sub claim"),
    (jwt.DecodeError, "malformed token"),
)


class SigningKeys(Protocol):
    """Where the verification key for a token comes from."""

    may_block: bool

    def key_for(self, token: str) -> Any:
        """The key that should have signed ``token``; raise AuthenticationFailed if there is none."""
        ...


class SharedSecret:
    """One HS256 secret for every token."""

    may_block = False

    def __init__(self, secret: bytes) -> None:
        """``secret`` is the raw HS256 key."""
        self._secret = secret

    def key_for(self, token: str) -> bytes:
        """The shared secret."""
        return self._secret


class JwksFileKeys:
    """RS256 public keys read once from a JWKS file; the token's ``kid`` picks one."""

    may_block = False

    def __init__(self, path: Path) -> None:
        """Load ``path``; raise ConfigError if it is unreadable or not a JWKS."""
        try:
            self._keys = jwt.PyJWKSet.from_json(path.read_text())
        except (OSError, json.JSONDecodeError, jwt.PyJWTError) as exc:
            raise ConfigError(f"auth.jwks_path: cannot load JWKS from {path}: {exc}") from exc

    def key_for(self, token: str) -> Any:
        """The key named by the token's ``kid`` (or the only key, when the token names none)."""
        key_id = _unverified_key_id(token)
        if key_id is None:
            if len(self._keys.keys) == 1:
                return self._keys.keys[0].key
            raise AuthenticationFailed("token has no kid header")
        for key in self._keys.keys:
            if key.key_id == key_id:
                return key.key
        raise AuthenticationFailed("unknown signing key")


class JwksUrlKeys:
    """RS256 public keys fetched from a JWKS URL and cached (network I/O: call off the event loop)."""

    may_block = True

    def __init__(self, url: str, *, refresh_cooldown_s: float) -> None:
        """Keys are fetched lazily on the first token.

        The key set is cached for JWKS_CACHE_S, so a key the provider revokes stops verifying
        within that time (pyjwt's per-key cache is left off: it never expires). A token with an
        unknown kid refetches the set at most once per ``refresh_cooldown_s``: rotated keys are
        picked up that fast, and forged kids cannot turn requests into provider load.
        """
        self._client = jwt.PyJWKClient(
            url, cache_keys=False, lifespan=JWKS_CACHE_S, timeout=10, cooldown_duration=refresh_cooldown_s
        )

    def key_for(self, token: str) -> Any:
        """The key matching the token's ``kid``, fetched from the JWKS URL when not cached."""
        try:
            return self._client.get_signing_key_from_jwt(token).key
        except jwt.PyJWKClientConnectionError as exc:
            logger.warning("cannot fetch JWKS: %s", exc)
            raise AuthenticationFailed("signing keys unavailable") from exc
        except jwt.DecodeError as exc:
            raise AuthenticationFailed("malformed token") from exc
        except jwt.PyJWKClientError as exc:
            raise AuthenticationFailed("unknown signing key") from exc


class TokenVerifier:
    """Checks a bearer token's signature and claims and turns it into a Principal.

    Tokens that verified are remembered until their ``exp`` (a later check could only fail
    because of ``exp``: ``iat`` and ``nbf`` only ever become more valid); failures are not.
    """

    def __init__(
        self,
        *,
        algorithm: str,
        keys: SigningKeys,
        issuer: str,
        audience: str,
        leeway_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``algorithm`` is the only one accepted; ``keys`` supplies the verification key;
        ``clock`` (epoch seconds) decides when a remembered token has expired."""
        self._algorithm = algorithm
        self._keys = keys
        self._issuer = issuer
        self._audience = audience
        self._leeway_s = leeway_s
        self._clock = clock
        self._verified: ExpiringLruCache[str, Principal] = ExpiringLruCache(VERIFIED_TOKEN_CACHE_ENTRIES)
        # verify() may run in worker threads (JWKS URL keys); the lock is uncontended otherwise.
        self._verified_lock = threading.Lock()

    @property
    def may_block(self) -> bool:
        """Whether verifying can wait on the network (JWKS URL)."""
        return self._keys.may_block

    def verify(self, token: str) -> Principal:
        """Return the token's Principal; raise AuthenticationFailed with a short reason."""
        now = self._clock()
        with self._verified_lock:
            remembered = self._verified.get(token, now)
        if remembered is not None:
            return remembered
        claims = self._verified_claims(token)
        principal = principal_from_claims(claims)
        if len(token) <= MAX_CACHED_TOKEN_CHARS:
            with self._verified_lock:
                self._verified.put(token, principal, float(claims["exp"]))
        return principal

    def _verified_claims(self, token: str) -> dict[str, Any]:
        try:
            return jwt.decode(
                token,
                self._keys.key_for(token),
                algorithms=[self._algorithm],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway_s,
                options={"require": list(REQUIRED_CLAIMS)},
            )
        except jwt.MissingRequiredClaimError as exc:
            raise AuthenticationFailed(f"missing {exc.claim} claim") from exc
        except jwt.PyJWTError as exc:
            raise AuthenticationFailed(_reason(exc)) from exc


def principal_from_claims(claims: dict[str, Any]) -> Principal:
    """Build the Principal from verified claims; raise AuthenticationFailed if they are unusable."""
    user = claims.get("sub")
    if not isinstance(user, str) or not user:
        raise AuthenticationFailed("invalid sub claim")
    roles = claims.get("roles")
    if not isinstance(roles, list) or not roles or not all(isinstance(role, str) for role in roles):
        raise AuthenticationFailed("roles claim must be a non-empty list of role names")
    unknown = sorted(set(roles) - KNOWN_ROLES)
    if unknown:
        raise AuthenticationFailed(f"unknown role {unknown[0]!r}")
    tenant = claims.get("tenant")
    if tenant is not None and (not isinstance(tenant, str) or not tenant):
        raise AuthenticationFailed("invalid tenant claim")
    if tenant is None and TENANT_SCOPED_ROLES & set(roles):
        raise AuthenticationFailed("missing tenant claim")
    return Principal(user=user, tenant_id=tenant, roles=frozenset(roles))


def token_verifier_from_config(config: GatewayConfig) -> TokenVerifier:
    """Build the verifier for ``config.auth``; for HS256 this creates the secret file if absent.

    Call it at application start-up: it touches the file system (and fails fast on bad config).
    """
    auth = config.auth
    keys: SigningKeys
    if auth.algorithm == "HS256":
        keys = SharedSecret(ensure_hs256_secret(hs256_secret_path(config)))
    elif auth.jwks_path is not None:
        keys = JwksFileKeys(Path(auth.jwks_path))
    elif auth.jwks_url is not None:
        keys = JwksUrlKeys(auth.jwks_url, refresh_cooldown_s=auth.jwks_refresh_cooldown_s)
    else:
        raise ConfigError("auth: RS256 needs jwks_path or jwks_url")
    return TokenVerifier(
        algorithm=auth.algorithm,
        keys=keys,
        issuer=auth.issuer,
        audience=auth.audience,
        leeway_s=auth.leeway_s,
    )


def bearer_token(authorization: str | None) -> str:
    """The token in an ``Authorization: Bearer <token>`` header value."""
    if not authorization:
        raise AuthenticationFailed("missing bearer token", token_present=False)
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationFailed("expected 'Authorization: Bearer <token>'")
    return token.strip()


async def provide_principal(request: Request[Any, Any, Any]) -> Principal:
    """Litestar dependency: the verified caller of this request."""
    verifier: TokenVerifier = request.app.state.token_verifier
    token = bearer_token(request.headers.get("authorization"))
    if verifier.may_block:
        return await asyncio.to_thread(verifier.verify, token)
    return verifier.verify(token)


def auth_dependencies() -> dict[str, Provide]:
    """App-level dependencies: ``principal`` for handlers that need an authenticated caller."""
    return {"principal": Provide(provide_principal)}


def _reason(exc: jwt.PyJWTError) -> str:
    for error_type, reason in _REASONS:
        if isinstance(exc, error_type):
            return reason
    return "invalid token"


def _unverified_key_id(token: str) -> str | None:
    try:
        key_id = jwt.get_unverified_header(token).get("kid")
    except jwt.DecodeError as exc:
        raise AuthenticationFailed("malformed token") from exc
    return key_id if isinstance(key_id, str) else None
