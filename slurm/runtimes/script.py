"""The ``script`` runtime: the user's argv (exec'd) or bash body, in the batch step."""

from __future__ import annotations

import shlex

from slurm.batch_job import BatchJob
from slurm.runtimes.node_network import fabric_exports


def render_script(job: BatchJob) -> list[str]:
    """The partition's fabric, then ``exec`` of the argv or the body with bash's defaults."""
    lines = fabric_exports(job)
    if job.command is not None:
        # exec: the program gets Slurm's signals directly; "--" keeps a program named "-x" from
        # being read as an option of exec.
        return [*lines, "exec -- " + shlex.join(job.command)]
    return [
        *lines,
        "# The script below runs with bash's default options, as if it were its own file.",
        "set +euo pipefail",
        job.script or "",
    ]
