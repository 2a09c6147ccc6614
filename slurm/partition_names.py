"""Which partitions the cluster has (``sinfo -h -o %R``), for validating tenant settings."""

from __future__ import annotations

from slurm.command_runner import CommandRunner
from slurm.errors import SlurmOutputError

SINFO_PARTITION_NAMES = ("sinfo", "--noheader", "--format=%R")


def list_partition_names(runner: CommandRunner) -> frozenset[str]:
    """Names of every partition slurmctld knows (hidden ones are not listed)."""
    return parse_partition_names(runner.run(SINFO_PARTITION_NAMES))


def parse_partition_names(stdout: str) -> frozenset[str]:
    """One partition name per line; sinfo repeats a name for each node state group."""
    names = frozenset(line.strip() for line in stdout.splitlines() if line.strip())
    for name in names:
        if any(char.isspace() for char in name):
            raise SlurmOutputError(f"sinfo: unexpected partition name {name!r}")
    return names
