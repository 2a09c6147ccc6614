from pathlib import Path

import jwt
import pytest

from gateway.auth import token_verifier_from_config
from gateway.cli import main
from gateway.config import ENV_STATE_DIR, load_config
from gateway.principal import Principal


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(ENV_STATE_DIR, str(tmp_path))
    return tmp_path


def test_token_command_prints_a_token_the_gateway_accepts(
    state_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exit_code = main(
        ["token", "--user", "alice", "--tenant", "t1", "--role", "user", "--role", "tenant-admin"]
    )
    assert exit_code == 0
    token = capsys.readouterr().out.strip()
    verifier = token_verifier_from_config(load_config(None, {ENV_STATE_DIR: str(state_dir)}))
    assert verifier.verify(token) == Principal(
        user="alice", tenant_id="t1", roles=frozenset({"user", "tenant-admin"})
    )
    assert (state_dir / "jwt_hs256.secret").stat().st_size == 32


def test_token_ttl_sets_expiry(state_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["token", "--user", "root", "--role", "admin", "--ttl", "120"]) == 0
    claims = jwt.decode(capsys.readouterr().out.strip(), options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 120
    assert "tenant" not in claims


def test_tenant_scoped_role_needs_tenant(state_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["token", "--user", "alice", "--role", "user"]) == 2
    assert "--tenant is required for the user role" in capsys.readouterr().err


def test_unknown_role_is_refused(state_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["token", "--user", "alice", "--role", "root"])
    assert exited.value.code == 2
    assert "invalid choice: 'root'" in capsys.readouterr().err


def test_rs256_config_cannot_mint(
    state_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_file = tmp_path / "gateway.toml"
    config_file.write_text('[auth]\nalgorithm = "RS256"\njwks_path = "/nonexistent"\n')
    assert main(["token", "--config", str(config_file), "--user", "a", "--role", "admin"]) == 2
    assert "identity provider" in capsys.readouterr().err
