"""RS256 tokens verified with keys fetched from a JWKS URL (a real HTTP server on loopback)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.auth import token_verifier_from_config
from gateway.config import AuthConfig, DatabaseConfig, GatewayConfig, StorageConfig
from gateway.domain_errors import AuthenticationFailed
from gateway.principal import Principal
from gateway.token_minting import mint_token

pytestmark = pytest.mark.integration


class JwksHandler(BaseHTTPRequestHandler):
    """Serves whatever JWKS document the test put in ``document``."""

    document: ClassVar[dict[str, object]] = {"keys": []}
    requests: ClassVar[int] = 0

    def do_GET(self) -> None:
        type(self).requests += 1
        body = json.dumps(self.document).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Keep the test output clean."""


def jwks(keys: dict[str, rsa.RSAPrivateKey]) -> dict[str, object]:
    entries = []
    for key_id, private_key in keys.items():
        entry = jwt.algorithms.RSAAlgorithm.to_jwk(private_key.public_key(), as_dict=True)
        entries.append({**entry, "kid": key_id, "use": "sig", "alg": "RS256"})
    return {"keys": entries}


@pytest.fixture
def jwks_server() -> Iterator[str]:
    JwksHandler.document = {"keys": []}
    JwksHandler.requests = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), JwksHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json"
    server.shutdown()
    server.server_close()


def rs256_config(jwks_url: str, *, cooldown_s: float = 0.0) -> GatewayConfig:
    auth = AuthConfig(
        algorithm="RS256",
        jwks_url=jwks_url,
        issuer="https://idp.test/",
        audience="sgw",
        jwks_refresh_cooldown_s=cooldown_s,
    )
    return GatewayConfig(
        database=DatabaseConfig(url="sqlite://"),
        storage=StorageConfig(url="file:///var/tmp/unused"),
        auth=auth,
    )


def token(key: rsa.RSAPrivateKey, key_id: str, auth: AuthConfig) -> str:
    return mint_token(auth, key, user="alice", tenant="t1", roles=["user"], ttl_s=60, key_id=key_id)


def test_keys_come_from_the_jwks_url_and_a_rotated_key_is_fetched(jwks_server: str) -> None:
    first, second = (rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(2))
    config = rs256_config(jwks_server)
    JwksHandler.document = jwks({"k1": first})
    verifier = token_verifier_from_config(config)
    alice = Principal(user="alice", tenant_id="t1", roles=frozenset({"user"}))
    assert verifier.verify(token(first, "k1", config.auth)) == alice
    assert JwksHandler.requests == 1

    # The identity provider rotates: a token with a new kid makes the gateway fetch again.
    JwksHandler.document = jwks({"k1": first, "k2": second})
    assert verifier.verify(token(second, "k2", config.auth)) == alice
    assert JwksHandler.requests == 2

    forged = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(AuthenticationFailed, match="bad signature"):
        verifier.verify(token(forged, "k2", config.auth))


def test_forged_kids_refetch_the_key_set_at_most_once_per_cooldown(jwks_server: str) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    config = rs256_config(jwks_server, cooldown_s=60.0)
    JwksHandler.document = jwks({"k1": key})
    verifier = token_verifier_from_config(config)
    verifier.verify(token(key, "k1", config.auth))
    for attempt in range(20):
        with pytest.raises(AuthenticationFailed, match="unknown signing key"):
            verifier.verify(token(key, f"forged-{attempt}", config.auth))
    assert JwksHandler.requests == 1


def test_an_unreachable_jwks_url_refuses_tokens_without_crashing(jwks_server: str) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    config = rs256_config("http://127.0.0.1:9/jwks.json")  # discard port: nothing listens
    with pytest.raises(AuthenticationFailed, match="signing keys unavailable"):
        token_verifier_from_config(config).verify(token(key, "k1", config.auth))
