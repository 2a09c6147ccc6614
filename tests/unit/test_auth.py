import json
import stat
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from litestar import Litestar, get
from litestar.testing import TestClient

from gateway.auth import (
    AuthenticatedPrincipal,
    JwksFileKeys,
    SharedSecret,
    TokenVerifier,
    auth_dependencies,
    bearer_token,
    token_verifier_from_config,
)
from gateway.authorization import require_role, require_tenant_role
from gateway.config import AuthConfig, ConfigError, GatewayConfig
from gateway.domain_errors import AuthenticationFailed, NotFound, PermissionDenied
from gateway.hs256_secret import ensure_hs256_secret, hs256_secret_path
from gateway.principal import Principal
from gateway.problems import problem_exception_handlers
from gateway.token_minting import mint_token

SECRET = b"s" * 32
AUTH = AuthConfig()


def hs256_verifier(secret: bytes = SECRET, auth: AuthConfig = AUTH) -> TokenVerifier:
    return TokenVerifier(
        algorithm="HS256",
        keys=SharedSecret(secret),
        issuer=auth.issuer,
        audience=auth.audience,
        leeway_s=auth.leeway_s,
    )


def raw_token(claims: dict[str, Any], secret: bytes = SECRET) -> str:
    return jwt.encode(claims, secret, algorithm="HS256")


def base_claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": "alice",
        "tenant": "t1",
        "roles": ["user"],
        "iss": AUTH.issuer,
        "aud": AUTH.audience,
        "iat": now,
        "exp": now + 600,
    }
    claims.update(overrides)
    return {key: value for key, value in claims.items() if value is not None}


def reason_of(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(AuthenticationFailed) as caught:
        verifier.verify(token)
    return caught.value.reason


def test_minted_token_verifies_to_principal() -> None:
    token = mint_token(AUTH, SECRET, user="alice", tenant="t1", roles=["user", "tenant-admin"], ttl_s=60)
    principal = hs256_verifier().verify(token)
    assert principal == Principal(user="alice", tenant_id="t1", roles=frozenset({"user", "tenant-admin"}))


def test_admin_token_needs_no_tenant() -> None:
    token = mint_token(AUTH, SECRET, user="root", tenant=None, roles=["admin"], ttl_s=60)
    assert hs256_verifier().verify(token).tenant_id is None


def test_expired_token_is_rejected() -> None:
    # Issued long ago: beyond the 30 s leeway.
    token = mint_token(AUTH, SECRET, user="a", tenant="t1", roles=["user"], ttl_s=60, now=time.time() - 3600)
    assert reason_of(hs256_verifier(), token) == "token expired"


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"aud": "someone-else"}, "wrong audience"),
        ({"iss": "evil"}, "wrong issuer"),
        ({"exp": None}, "missing exp claim"),
        ({"iat": None}, "missing iat claim"),
        ({"aud": None}, "missing aud claim"),
        ({"sub": None}, "missing sub claim"),
        ({"roles": None}, "roles claim must be a non-empty list of role names"),
        ({"roles": []}, "roles claim must be a non-empty list of role names"),
        ({"roles": ["root"]}, "unknown role 'root'"),
        ({"tenant": None}, "missing tenant claim"),
        ({"tenant": 7}, "invalid tenant claim"),
        ({"iat": int(time.time()) + 3600}, "token not valid yet"),
    ],
)
def test_bad_claims_are_rejected_with_reason(overrides: dict[str, Any], reason: str) -> None:
    assert reason_of(hs256_verifier(), raw_token(base_claims(**overrides))) == reason


class CountingSecret(SharedSecret):
    """A shared secret that counts how often a signature had to be checked."""

    def __init__(self, secret: bytes) -> None:
        super().__init__(secret)
        self.lookups = 0

    def key_for(self, token: str) -> bytes:
        self.lookups += 1
        return super().key_for(token)


def counting_verifier(keys: CountingSecret, clock: Any = time.time) -> TokenVerifier:
    return TokenVerifier(
        algorithm="HS256",
        keys=keys,
        issuer=AUTH.issuer,
        audience=AUTH.audience,
        leeway_s=AUTH.leeway_s,
        clock=clock,
    )


def test_verified_token_is_remembered_until_its_exp() -> None:
    keys = CountingSecret(SECRET)
    claims = base_claims()
    now = [float(claims["iat"])]
    verifier = counting_verifier(keys, clock=lambda: now[0])
    token = raw_token(claims)
    first = verifier.verify(token)
    assert verifier.verify(token) == first
    assert keys.lookups == 1
    now[0] = float(claims["exp"])
    # At exp the token is checked again (and, once really expired, refused).
    verifier.verify(token)
    assert keys.lookups == 2


def test_refused_tokens_are_not_remembered() -> None:
    keys = CountingSecret(SECRET)
    verifier = counting_verifier(keys)
    token = raw_token(base_claims(roles=["wizard"]))
    assert reason_of(verifier, token) == "unknown role 'wizard'"
    assert reason_of(verifier, token) == "unknown role 'wizard'"
    assert keys.lookups == 2


def test_a_remembered_token_does_not_vouch_for_a_forged_one() -> None:
    verifier = hs256_verifier()
    verifier.verify(raw_token(base_claims()))
    assert reason_of(verifier, raw_token(base_claims(), secret=b"x" * 32)) == "bad signature"


def test_bad_signature_is_rejected() -> None:
    token = raw_token(base_claims(), secret=b"x" * 32)
    assert reason_of(hs256_verifier(), token) == "bad signature"


def test_garbage_is_malformed() -> None:
    assert reason_of(hs256_verifier(), "not.a.jwt") == "malformed token"


def test_unsigned_token_is_rejected() -> None:
    token = jwt.encode(base_claims(), None, algorithm="none")
    assert reason_of(hs256_verifier(), token) == "algorithm not allowed"


@pytest.fixture
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def write_jwks(path: Path, keys: dict[str, rsa.RSAPrivateKey]) -> Path:
    entries = []
    for key_id, private_key in keys.items():
        entry = jwt.algorithms.RSAAlgorithm.to_jwk(private_key.public_key(), as_dict=True)
        entries.append({**entry, "kid": key_id, "use": "sig", "alg": "RS256"})
    path.write_text(json.dumps({"keys": entries}))
    return path


def rs256_verifier(jwks: Path) -> TokenVerifier:
    return TokenVerifier(
        algorithm="RS256", keys=JwksFileKeys(jwks), issuer=AUTH.issuer, audience=AUTH.audience, leeway_s=0
    )


def test_rs256_with_jwks_file_picks_key_by_kid(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    verifier = rs256_verifier(write_jwks(tmp_path / "jwks.json", {"k1": other, "k2": rsa_key}))
    rs_auth = AuthConfig(algorithm="RS256")
    token = mint_token(rs_auth, rsa_key, user="bob", tenant="t2", roles=["user"], ttl_s=60, key_id="k2")
    assert verifier.verify(token) == Principal(user="bob", tenant_id="t2", roles=frozenset({"user"}))
    wrong_kid = mint_token(rs_auth, rsa_key, user="bob", tenant="t2", roles=["user"], ttl_s=60, key_id="k1")
    assert reason_of(verifier, wrong_kid) == "bad signature"
    unknown_kid = mint_token(rs_auth, rsa_key, user="bob", tenant="t2", roles=["user"], ttl_s=60, key_id="k9")
    assert reason_of(verifier, unknown_kid) == "unknown signing key"


def test_rs256_verifier_refuses_hs256_tokens(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    verifier = rs256_verifier(write_jwks(tmp_path / "jwks.json", {"k1": rsa_key}))
    assert reason_of(verifier, raw_token(base_claims())) == "algorithm not allowed"


def test_unreadable_jwks_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "jwks.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"auth\.jwks_path"):
        JwksFileKeys(tmp_path / "jwks.json")


def test_secret_file_created_once_with_mode_0600(gateway_config: GatewayConfig) -> None:
    path = hs256_secret_path(gateway_config)
    assert path == Path(gateway_config.state_dir) / "jwt_hs256.secret"
    assert not path.exists()
    verifier = token_verifier_from_config(gateway_config)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    secret = path.read_bytes()
    assert len(secret) == 32
    assert ensure_hs256_secret(path) == secret
    token = mint_token(gateway_config.auth, secret, user="a", tenant=None, roles=["admin"], ttl_s=60)
    assert verifier.verify(token).user == "a"


def test_short_secret_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "short").write_bytes(b"tooshort")
    with pytest.raises(ConfigError, match="at least 32"):
        ensure_hs256_secret(tmp_path / "short")


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "missing bearer token"),
        ("Basic abc", "expected 'Authorization: Bearer <token>'"),
        ("Bearer ", "expected 'Authorization: Bearer <token>'"),
    ],
)
def test_bearer_header_parsing(header: str | None, reason: str) -> None:
    with pytest.raises(AuthenticationFailed, match=reason):
        bearer_token(header)


def test_bearer_scheme_is_case_insensitive() -> None:
    assert bearer_token("bearer abc.def.ghi") == "abc.def.ghi"


def test_role_guards() -> None:
    admin = Principal(user="root", tenant_id=None, roles=frozenset({"admin"}))
    tenant_admin = Principal(user="ta", tenant_id="a", roles=frozenset({"tenant-admin"}))
    user = Principal(user="u", tenant_id="a", roles=frozenset({"user"}))
    require_role(admin, "admin")
    with pytest.raises(PermissionDenied, match="admin role"):
        require_role(user, "admin")
    require_tenant_role(admin, "b", "tenant-admin")
    require_tenant_role(tenant_admin, "a", "tenant-admin")
    with pytest.raises(NotFound):
        require_tenant_role(tenant_admin, "b", "tenant-admin")
    with pytest.raises(PermissionDenied):
        require_tenant_role(user, "a", "tenant-admin")


@get("/whoami")
async def whoami(principal: AuthenticatedPrincipal) -> dict[str, str]:
    return {"user": principal.user}


@pytest.fixture
def client() -> Any:
    app = Litestar(
        [whoami], dependencies=auth_dependencies(), exception_handlers=problem_exception_handlers()
    )
    app.state.token_verifier = hs256_verifier()
    with TestClient(app) as test_client:
        yield test_client


def test_http_principal_dependency(client: TestClient[Litestar]) -> None:
    token = mint_token(AUTH, SECRET, user="alice", tenant="t1", roles=["user"], ttl_s=60)
    response = client.get("/whoami", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    assert response.json() == {"user": "alice"}


def test_http_missing_token_is_401_with_bare_challenge(client: TestClient[Litestar]) -> None:
    response = client.get("/whoami")
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"] == 'Bearer realm="slurm-gateway"'
    assert response.json()["detail"] == "missing bearer token"


def test_http_expired_token_is_401_invalid_token(client: TestClient[Litestar]) -> None:
    token = mint_token(AUTH, SECRET, user="a", tenant="t1", roles=["user"], ttl_s=1, now=time.time() - 600)
    response = client.get("/whoami", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == (
        'Bearer realm="slurm-gateway", error="invalid_token", error_description="token expired"'
    )
    assert response.json()["detail"] == "token expired"
