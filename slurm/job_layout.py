"""Where a job's files live under its working directory (pure paths; no I/O).

The batch script (as the job's user) and the gateway (reading, as root) agree on this layout:

    <working_dir>/
      outputs/<step>                      symlink to the published attempt's out/ (atomic flip)
      .attempts/<step>/a<n>/out/          $SGW_OUTPUT_DIR: where attempt n of the step writes
      .attempts/<step>/a<n>/manifest.sha256         sha256sum lines of every file in out/,
      .attempts/<step>/a<n>/manifest.<task>.sha256  written after success (one per array task)
      .heartbeat/<step>.a<n>              touched every few seconds while the attempt runs
      .progress/<step>.a<n>               $SGW_PROGRESS_FILE: JSON lines the attempt's programs
                                          append (fraction, message, metrics); the last wins.
                                          An array's tasks share the attempt's one file.

A plain job (no ``steps``) is one step named ``main``. An attempt only ever writes below its own
``a<n>`` directory, and ``outputs/<step>`` changes by renaming a new symlink over the old one, so
readers see one complete set of outputs or none, never a mix of attempts.
"""

from __future__ import annotations

from pathlib import PurePosixPath

DEFAULT_STEP_NAME = "main"
OUTPUTS_DIR = "outputs"
ATTEMPTS_DIR = ".attempts"
HEARTBEAT_DIR = ".heartbeat"
PROGRESS_DIR = ".progress"
ATTEMPT_OUT_DIR = "out"
# sha256sum's own format ("<hex>  ./relative/path"), so `sha256sum -c` can re-check it by hand.
MANIFEST_NAME = "manifest.sha256"
ARRAY_MANIFEST_PATTERN = "manifest.{task}.sha256"


def attempt_dir(working_dir: str, step: str, attempt: int) -> str:
    """The directory that belongs to attempt ``attempt`` of ``step`` alone."""
    return str(PurePosixPath(working_dir) / ATTEMPTS_DIR / step / f"a{attempt}")


def attempt_output_dir(working_dir: str, step: str, attempt: int) -> str:
    """Where the attempt's program writes its outputs ($SGW_OUTPUT_DIR)."""
    return str(PurePosixPath(attempt_dir(working_dir, step, attempt)) / ATTEMPT_OUT_DIR)


def outputs_dir(working_dir: str) -> str:
    """The directory of published outputs, one symlink per step ($SGW_OUTPUTS_DIR)."""
    return str(PurePosixPath(working_dir) / OUTPUTS_DIR)


def published_link(working_dir: str, step: str) -> str:
    """The symlink through which the step's published outputs are read."""
    return str(PurePosixPath(outputs_dir(working_dir)) / step)


def published_link_target(step: str, attempt: int) -> str:
    """What ``published_link`` points at once ``attempt`` is published (relative, so the job
    directory can be mounted elsewhere)."""
    return f"../{ATTEMPTS_DIR}/{step}/a{attempt}/{ATTEMPT_OUT_DIR}"


def heartbeat_file(working_dir: str, step: str, attempt: int) -> str:
    """The file the attempt's wrapper (or program) touches to show it is alive."""
    return str(PurePosixPath(working_dir) / HEARTBEAT_DIR / f"{step}.a{attempt}")


def progress_file(working_dir: str, step: str, attempt: int) -> str:
    """The JSON-lines file the attempt's programs append progress to ($SGW_PROGRESS_FILE).

    One file per attempt, shared by an array's tasks: the latest line any task wrote is the
    step's progress (a retried attempt starts with an empty file of its own).
    """
    return str(PurePosixPath(working_dir) / PROGRESS_DIR / f"{step}.a{attempt}")


def batch_log_pattern(working_dir: str, stream: str, *, array: bool) -> str:
    """The --output/--error path with Slurm's placeholders (``stream``: "out" or "err")."""
    return f"{working_dir}/slurm-{'%A_%a' if array else '%j'}.{stream}"


def batch_log_name(slurm_job_id: str, stream: str, task: int | None = None) -> str:
    """The name Slurm gives one attempt's log (batch_log_pattern filled in), in the working dir."""
    stem = f"{slurm_job_id}_{task}" if task is not None else slurm_job_id
    return f"slurm-{stem}.{stream}"
