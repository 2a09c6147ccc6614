from pathlib import Path

import pytest

from gateway.config import (
    ENV_DATABASE_URL,
    ENV_PORT,
    ENV_STATE_DIR,
    ENV_STORAGE_URL,
    AccountingConfig,
    ConfigError,
    GatewayConfig,
    load_config,
)


def write_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return path


def test_defaults_without_file_or_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(None, {})
    assert config.state_dir == "./var"
    assert config.server.host == "127.0.0.1"
    assert config.server.port == 8000
    assert config.server.access_log is False
    assert config.server.job_status_cache_s == 1.0
    assert config.slurm.driver == "cli"
    assert config.slurm.command_timeout_s == 30.0
    assert config.slurm.bin_dir is None
    assert config.database.url == f"sqlite:///{tmp_path}/var/gateway.db"
    assert config.storage.url == f"file://{tmp_path}/var/storage"


def test_file_values_are_loaded(tmp_path: Path) -> None:
    path = write_toml(
        tmp_path,
        """
state_dir = "/srv/gateway"
[server]
host = "0.0.0.0"
port = 9000
[slurm]
command_timeout_s = 5
bin_dir = "/opt/slurm/bin"
[database]
url = "postgresql+psycopg://gw@db/gateway"
""",
    )
    config = load_config(path, {})
    assert config.server == type(config.server)(host="0.0.0.0", port=9000)
    assert config.slurm.command_timeout_s == 5.0
    assert config.slurm.bin_dir == "/opt/slurm/bin"
    assert config.database.url == "postgresql+psycopg://gw@db/gateway"
    # Not set in the file, so derived from the configured state_dir.
    assert config.storage.url == "file:///srv/gateway/storage"


def test_server_speed_settings_are_loaded_and_checked(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[server]\naccess_log = true\njob_status_cache_s = 0\n")
    server = load_config(path, {}).server
    assert (server.access_log, server.job_status_cache_s) == (True, 0.0)
    path = write_toml(tmp_path, "[server]\njob_status_cache_s = -1\n")
    with pytest.raises(ConfigError, match=r"\$\.server\.job_status_cache_s"):
        load_config(path, {})


def test_unknown_key_is_rejected_and_named(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[server]\nprot = 9000\n")
    with pytest.raises(ConfigError) as excinfo:
        load_config(path, {})
    message = str(excinfo.value)
    assert "prot" in message
    assert "$.server" in message
    assert str(path) in message


def test_unknown_top_level_table_is_rejected(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[sever]\nport = 1\n")
    with pytest.raises(ConfigError, match="sever"):
        load_config(path, {})


def test_bad_type_names_the_key_path(tmp_path: Path) -> None:
    path = write_toml(tmp_path, '[server]\nport = "eighty"\n')
    with pytest.raises(ConfigError, match=r"\$\.server\.port"):
        load_config(path, {})


def test_out_of_range_port_is_rejected(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[server]\nport = 70000\n")
    with pytest.raises(ConfigError, match=r"65535.*\$\.server\.port"):
        load_config(path, {})


def test_unsupported_slurm_driver_is_rejected(tmp_path: Path) -> None:
    path = write_toml(tmp_path, '[slurm]\ndriver = "pyslurm"\n')
    with pytest.raises(ConfigError, match=r"\$\.slurm\.driver"):
        load_config(path, {})


def test_invalid_toml_is_a_config_error(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[server\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(path, {})


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "absent.toml", {})


def test_env_overrides_win_over_file(tmp_path: Path) -> None:
    path = write_toml(tmp_path, '[server]\nport = 9000\n[database]\nurl = "sqlite:///file.db"\n')
    env = {
        ENV_DATABASE_URL: "sqlite:///env.db",
        ENV_STORAGE_URL: "s3://bucket/prefix",
        ENV_PORT: "9100",
    }
    config = load_config(path, env)
    assert config.database.url == "sqlite:///env.db"
    assert config.storage.url == "s3://bucket/prefix"
    assert config.server.port == 9100


def test_state_dir_env_moves_derived_urls(tmp_path: Path) -> None:
    config = load_config(None, {ENV_STATE_DIR: str(tmp_path / "state")})
    assert config.state_dir == str(tmp_path / "state")
    assert config.database.url == f"sqlite:///{tmp_path}/state/gateway.db"
    assert config.storage.url == f"file://{tmp_path}/state/storage"


def test_non_integer_port_env_names_the_variable() -> None:
    with pytest.raises(ConfigError, match=ENV_PORT):
        load_config(None, {ENV_PORT: "http"})


def test_config_is_immutable(gateway_config: GatewayConfig) -> None:
    with pytest.raises(AttributeError):
        gateway_config.state_dir = "/elsewhere"  # type: ignore[misc]


def test_accounting_defaults() -> None:
    accounting = load_config(None, {}).accounting
    assert accounting == AccountingConfig(
        enabled=True, interval_s=60.0, lookback_s=21600, initial_window_s=3024000, lease_s=120.0
    )


def test_accounting_settings_are_loaded(tmp_path: Path) -> None:
    path = write_toml(
        tmp_path,
        "[accounting]\nenabled = false\ninterval_s = 30\nlookback_s = 3600\ninitial_window_s = 86400\n"
        "lease_s = 90\n",
    )
    accounting = load_config(path, {}).accounting
    assert accounting == AccountingConfig(
        enabled=False, interval_s=30.0, lookback_s=3600, initial_window_s=86400, lease_s=90.0
    )


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("lookback = 60", r"lookback.*\$\.accounting"),
        ("interval_s = 0", r"\$\.accounting\.interval_s"),
        ("lookback_s = -1", r"\$\.accounting\.lookback_s"),
        ("lookback_s = 1.5", r"\$\.accounting\.lookback_s"),
        ("initial_window_s = 0", r"\$\.accounting\.initial_window_s"),
        ("lease_s = 60", r"lease_s must be greater than interval_s.*\$\.accounting"),
    ],
)
def test_bad_accounting_settings_are_named(tmp_path: Path, text: str, where: str) -> None:
    path = write_toml(tmp_path, f"[accounting]\n{text}\n")
    with pytest.raises(ConfigError, match=where):
        load_config(path, {})
