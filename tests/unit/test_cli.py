import json
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli import EXIT_CONFIG_ERROR, main
from gateway.version import package_version


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("SLURM_GATEWAY_DATABASE_URL", "SLURM_GATEWAY_STORAGE_URL", "SLURM_GATEWAY_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLURM_GATEWAY_STATE_DIR", str(tmp_path / "state"))


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["version"]) == 0
    assert capsys.readouterr().out.strip() == f"slurm-gateway {package_version()}"


def test_check_config_prints_resolved_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config_file = tmp_path / "gateway.toml"
    config_file.write_text("[server]\nport = 8123\n")
    assert main(["check-config", "--config", str(config_file)]) == 0
    resolved = json.loads(capsys.readouterr().out)
    assert resolved["server"]["port"] == 8123
    assert resolved["database"]["url"] == f"sqlite:///{tmp_path}/state/gateway.db"


def test_check_config_hides_database_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SLURM_GATEWAY_DATABASE_URL", "postgresql+psycopg://gw:hunter2@db/gateway")
    assert main(["check-config"]) == 0
    out = capsys.readouterr().out
    assert "hunter2" not in out
    assert "postgresql+psycopg://gw:***@db/gateway" in out


def test_check_config_unknown_key_exits_2_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_file = tmp_path / "gateway.toml"
    config_file.write_text("[slurm]\ncommand_timeout = 5\n")
    assert main(["check-config", "--config", str(config_file)]) == EXIT_CONFIG_ERROR
    captured = capsys.readouterr()
    assert captured.out == ""
    error_lines = captured.err.strip().splitlines()
    assert len(error_lines) == 1
    assert "command_timeout" in error_lines[0]
    assert "$.slurm" in error_lines[0]


def test_module_entry_point_reports_errors_without_traceback(tmp_path: Path) -> None:
    config_file = tmp_path / "gateway.toml"
    config_file.write_text("[server]\nport = 0\n")
    completed = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", "--config", str(config_file)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == EXIT_CONFIG_ERROR
    assert "$.server.port" in completed.stderr
    assert "Traceback" not in completed.stderr


def test_serve_rejects_bad_port_before_starting(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as excinfo:
        main(["serve", "--port", "70000"])
    assert excinfo.value.code == 2
    assert "not a TCP port" in capsys.readouterr().err
