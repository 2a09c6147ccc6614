import json
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.accounting_cli import utc_epoch
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


@pytest.mark.parametrize(
    ("text", "epoch"),
    [
        ("2026-11-01", 1_793_491_200),
        ("2026-11-01T12:30", 1_793_536_200),
        ("2026-11-01T12:30:00Z", 1_793_536_200),
        ("2026-11-01T13:30:00+01:00", 1_793_536_200),
    ],
)
def test_accounting_dates_are_utc(text: str, epoch: int) -> None:
    assert utc_epoch(text) == epoch


@pytest.mark.parametrize(
    "argv",
    [
        ["reconcile", "--since", "last tuesday"],
        ["crosscheck", "--from", "2026-13-01", "--to", "2026-11-02"],
    ],
)
def test_accounting_commands_reject_a_bad_date(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as excinfo:
        main(argv)
    assert excinfo.value.code == EXIT_CONFIG_ERROR
    assert "not a date or date-time" in capsys.readouterr().err


def test_reconcile_until_needs_since(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["reconcile", "--until", "2026-11-02"]) == EXIT_CONFIG_ERROR
    assert "--until needs --since" in capsys.readouterr().err


def test_reconcile_window_must_not_be_empty(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["reconcile", "--since", "2026-11-02", "--until", "2026-11-01"]) == EXIT_CONFIG_ERROR
    assert "--since must be before --until" in capsys.readouterr().err


def test_crosscheck_window_must_not_be_empty(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["crosscheck", "--from", "2026-11-02", "--to", "2026-11-02"]) == EXIT_CONFIG_ERROR
    assert "--from must be before --to" in capsys.readouterr().err


def test_crosscheck_bucket_is_hour_or_day(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as excinfo:
        main(["crosscheck", "--from", "2026-11-01", "--to", "2026-11-02", "--bucket", "week"])
    assert excinfo.value.code == EXIT_CONFIG_ERROR
    assert "invalid choice: 'week'" in capsys.readouterr().err


def test_no_reprice_needs_since(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["reconcile", "--no-reprice"]) == EXIT_CONFIG_ERROR
    assert "--no-reprice needs --since" in capsys.readouterr().err


@pytest.mark.parametrize(("option", "value"), [("--until", "2999-01-01"), ("--since", "2999-01-01")])
def test_reconcile_refuses_a_window_in_the_future(
    option: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = (
        ["reconcile", option, value]
        if option == "--since"
        else ["reconcile", "--since", "2026-01-01", option, value]
    )
    assert main(argv) == EXIT_CONFIG_ERROR
    assert "must not be in the future" in capsys.readouterr().err


def test_migrate_status_reads_without_creating_and_follows_the_migration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    database = tmp_path / "state" / "gateway.db"
    assert main(["migrate", "--status"]) == 0
    before = json.loads(capsys.readouterr().out)
    assert before["current"] is None and before["head"]
    assert not database.exists()
    assert main(["migrate"]) == 0
    capsys.readouterr()
    assert main(["migrate", "--status"]) == 0
    assert json.loads(capsys.readouterr().out) == {"current": before["head"], "head": before["head"]}
