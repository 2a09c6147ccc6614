"""Build the Slurm command runner selected by the configuration."""

from __future__ import annotations

from pathlib import Path

from gateway.config import SlurmConfig
from slurm.command_runner import CommandRunner, SubprocessCommandRunner


def command_runner_from_config(config: SlurmConfig) -> CommandRunner:
    """Return the runner for ``config.driver`` ("cli": local Slurm client binaries)."""
    bin_dir = Path(config.bin_dir) if config.bin_dir is not None else None
    return SubprocessCommandRunner(timeout_s=config.command_timeout_s, bin_dir=bin_dir)
