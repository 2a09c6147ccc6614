"""Errors raised at the Slurm boundary."""


class SlurmError(Exception):
    """Base class for everything that goes wrong talking to Slurm."""


class SlurmUnavailable(SlurmError):
    """A Slurm command could not run, timed out, or exited non-zero."""


class SlurmOutputError(SlurmError):
    """A Slurm command ran but printed something we cannot parse."""


class SlurmRejected(SlurmError):
    """Slurm refused a request for a reason the user can fix (bad account, QOS limit, ...).

    ``message`` is already cleaned for users (no raw stderr dump); ``field`` names the JobSpec
    or tenant field most likely at fault, when one is.
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class JobSpecError(SlurmError):
    """A job description cannot be turned into a safe Slurm submission.

    Raised by the pure validators and renderers before anything reaches Slurm; ``field`` is the
    JobSpec path (e.g. ``env.LD_PRELOAD``, ``time_limit``) and ``message`` says how to fix it.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
