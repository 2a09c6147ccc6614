"""Turn a BatchJob into the bash script fed to sbatch on stdin and the sbatch argv (pure).

Script layout:

    #!/bin/bash
    #SBATCH --job-name=...            every job directive, values allow-listed
    ...
    #SBATCH --dependency=afterok:1:2  the Slurm jobs of the steps this one runs after
    #SBATCH --signal=B:USR2@60        the warning before the time limit, to the batch shell
    set -euo pipefail                 the first command line: sbatch stops reading
    export SLURM_EXPORT_ENV=ALL       directives here, so no text below can add one
    sgw_path=...                      the PATH the job started with, for the wrapper's tools
    export KEY='value'                the job's env, shlex-quoted
    export SGW_STEP=... ...           the step wrapper (slurm.step_wrapper): output dirs,
    ...                               heartbeat, USR2 forwarding, then
    sgw_main() {                      the runtime's lines, run as a background subshell:
    export UCX_NET_DEVICES='...'        the partition's fabric settings (from configuration)
    exec -- 'prog' 'arg' ...            script runtime, command: the argv, shlex-quoted
    set +euo pipefail                   script runtime, body: bash defaults again, then
    <script body verbatim>              the user's own code, as the user
    srun --mpi=pmix ... 'prog' ...      mpi, ray, julia, torchrun: the runtime's launch lines
    }                                   (slurm.runtimes), the argv shlex-quoted
    ...                               wait, manifest and publication on success, exit status

sbatch reads #SBATCH (and #PBS) directives only up to the first line that is neither blank
nor a comment. The generated ``set`` line always precedes user-supplied text, so neither a
script body nor a quoted argument or env value containing "\\n#SBATCH --uid=0" can add a
directive; directive values themselves are allow-listed (slurm.job_validation).
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping

from slurm.batch_job import BatchJob
from slurm.errors import JobSpecError
from slurm.job_layout import batch_log_pattern
from slurm.job_validation import validate_batch_job
from slurm.runtimes import render_runtime
from slurm.step_wrapper import SAVE_TOOLS_PATH_LINES, render_step_wrapper
from slurm.time_limits import format_time_limit

# Characters sbatch's directive parser treats specially: whitespace separates arguments,
# quotes group, backslash escapes and "#" starts a comment.
_DIRECTIVE_SPECIAL = frozenset(" \t\n\r\v\f\"'\\#")
# The only parts of the gateway's own environment sbatch needs; everything else (secrets,
# SBATCH_* input variables that would override directives, SLURM_* that --export=NONE still
# copies into the job) stays out.
SBATCH_ENVIRONMENT_NAMES = ("PATH", "SLURM_CONF", "LANG", "LC_ALL", "TZ")


def render_batch_script(job: BatchJob) -> str:
    """The complete batch script for ``job``; raises JobSpecError for any unsafe value."""
    validate_batch_job(job)
    lines = ["#!/bin/bash", *(f"#SBATCH {option}" for option in _directive_lines(job)), ""]
    lines += [
        "# sbatch stops reading directives at the first command, so nothing below can add one.",
        "set -euo pipefail",
        # The job is submitted with --export=NONE; its steps (srun) must see the job's env.
        "export SLURM_EXPORT_ENV=ALL",
        *SAVE_TOOLS_PATH_LINES,
        *(f"export {name}={shlex.quote(value)}" for name, value in job.env.items()),
        *render_step_wrapper(job, render_runtime(job)),
    ]
    return "\n".join(lines).rstrip("\n") + "\n"


def build_sbatch_argv(job: BatchJob) -> list[str]:
    """The argv of the sbatch call (run as root, the script on stdin).

    Job directives live in the script. Only what must not depend on the script's content is on
    the command line, which also wins over SBATCH_* environment variables and directives:
    --uid/--gid (who the job runs as), --export=NONE (the gateway's environment never reaches
    the job), --no-requeue (with Slurm's default JobRequeue=1 a node failure silently requeues
    the job under the same id, re-running user code behind the gateway's retry policy) and
    --parsable (the output format the driver parses).
    """
    validate_batch_job(job)
    return [
        "sbatch",
        "--parsable",
        f"--uid={job.unix_user}",
        f"--gid={job.unix_user}",
        "--export=NONE",
        "--no-requeue",
    ]


def sbatch_environment(parent: Mapping[str, str]) -> dict[str, str]:
    """The environment to run sbatch with: the few variables of ``parent`` sbatch needs."""
    return {name: parent[name] for name in SBATCH_ENVIRONMENT_NAMES if name in parent}


def _directive_lines(job: BatchJob) -> list[str]:
    directives = _directives(job)
    if job.exclusive:
        # A flag without a value: it goes right after the resources it makes exclusive.
        directives.insert(directives.index(f"--nodes={job.nodes}") + 1, "--exclusive")
    return directives


def _switches(job: BatchJob) -> str | None:
    if job.switches is None:
        return None
    if job.switches_wait_minutes is None:
        return str(job.switches)
    return f"{job.switches}@{job.switches_wait_minutes}"


def _directives(job: BatchJob) -> list[str]:
    options = [
        ("--job-name", job.name),
        ("--account", job.account),
        ("--partition", job.partition),
        ("--qos", job.qos),
        ("--nodes", str(job.nodes)),
        ("--ntasks-per-node", str(job.tasks_per_node)),
        ("--cpus-per-task", str(job.cpus_per_task)),
        ("--gres", _gres(job)),
        ("--mem", f"{job.memory_mb_per_node}M" if job.memory_mb_per_node is not None else None),
        ("--time", format_time_limit(job.time_limit_minutes)),
        # "&": every listed feature is required (Slurm's AND operator).
        ("--constraint", "&".join(job.constraints) or None),
        ("--switches", _switches(job)),
        ("--array", job.array),
        # afterok: start only once every listed job has completed successfully.
        ("--dependency", ":".join(("afterok", *job.dependencies)) if job.dependencies else None),
        # B: the batch shell alone, which passes it on to the program (slurm.step_wrapper).
        (
            "--signal",
            f"B:USR2@{job.signal_before_limit_s}" if job.signal_before_limit_s is not None else None,
        ),
        ("--comment", job.comment),
        ("--chdir", job.working_dir),
        ("--output", batch_log_pattern(job.working_dir, "out", array=job.array is not None)),
        ("--error", batch_log_pattern(job.working_dir, "err", array=job.array is not None)),
    ]
    return [_directive(option, value) for option, value in options if value is not None]


def _gres(job: BatchJob) -> str | None:
    if job.gpus_per_node == 0:
        return None
    if job.gpu_type is None:
        return f"gpu:{job.gpus_per_node}"
    return f"gpu:{job.gpu_type}:{job.gpus_per_node}"


def _directive(option: str, value: str) -> str:
    # Defence in depth behind the validators: a value sbatch would split, unquote or cut at a
    # "#" never becomes a directive.
    if not value or any(char in _DIRECTIVE_SPECIAL or not char.isprintable() for char in value):
        raise JobSpecError(option.removeprefix("--"), "contains characters not allowed in an #SBATCH value")
    return f"{option}={value}"
