"""Errors raised at the Slurm boundary."""


class SlurmError(Exception):
    """Base class for everything that goes wrong talking to Slurm."""


class SlurmUnavailable(SlurmError):
    """A Slurm command could not run, timed out, or exited non-zero."""


class SlurmOutputError(SlurmError):
    """A Slurm command ran but printed something we cannot parse."""
