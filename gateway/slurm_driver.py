"""Build the Slurm command runner and driver selected by the configuration."""

from __future__ import annotations

from pathlib import Path

from gateway.config import SlurmConfig
from slurm.cli_driver import CliSlurmDriver
from slurm.command_runner import CommandRunner, SubprocessCommandRunner
from slurm.driver import SlurmDriver
from slurm.partition_fabrics import PartitionFabrics
from slurm.rest_driver import RestSlurmDriver


def command_runner_from_config(config: SlurmConfig) -> CommandRunner:
    """The runner for Slurm's client binaries (sacctmgr, scontrol; sbatch and co. for "cli")."""
    bin_dir = Path(config.bin_dir) if config.bin_dir is not None else None
    return SubprocessCommandRunner(timeout_s=config.command_timeout_s, bin_dir=bin_dir)


def slurm_driver_from_config(config: SlurmConfig) -> SlurmDriver:
    """The job driver for ``config.driver``: Slurm's CLI, or slurmrestd with per-user JWTs."""
    fabrics = PartitionFabrics(config.fabric, config.default_fabric)
    if config.driver == "rest":
        return RestSlurmDriver(
            config.rest_url, config.jwt_key_path, timeout_s=config.command_timeout_s, fabrics=fabrics
        )
    return CliSlurmDriver(command_runner_from_config(config), fabrics=fabrics)
