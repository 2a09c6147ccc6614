"""Shared fixtures for unit tests."""

from pathlib import Path

import pytest

from gateway.config import ENV_STATE_DIR, GatewayConfig, load_config


@pytest.fixture
def gateway_config(tmp_path: Path) -> GatewayConfig:
    """Default configuration rooted in a per-test state directory."""
    return load_config(None, {ENV_STATE_DIR: str(tmp_path)})
