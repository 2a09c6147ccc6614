"""Validation of every BatchJob value that reaches an #SBATCH line, the shell or sbatch's argv.

Generated shell is a security boundary, so these checks are allow-lists with hard rejection,
and each JobSpecError names the field and says how to fix it. Values that end up on #SBATCH
lines are restricted to characters sbatch's directive parser takes literally (no whitespace,
quotes, backslash or "#", which starts a comment there), so they never need quoting.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from slurm.batch_job import BatchJob
from slurm.errors import JobSpecError
from slurm.runtime_validation import validate_fabric, validate_placement, validate_runtime
from slurm.time_limits import check_time_limit_minutes

# Slurm's default MaxArraySize (this cluster's too): array indices run 0 .. MaxArraySize - 1.
DEFAULT_MAX_ARRAY_SIZE = 1001
MAX_ENV_VARIABLES = 256
MAX_ENV_NAME_CHARS = 128
MAX_ENV_VALUE_CHARS = 32 * 1024
MAX_ENV_TOTAL_CHARS = 64 * 1024
MAX_NAME_CHARS = 128
MAX_WORKING_DIR_CHARS = 1024
# Sanity bounds only: Slurm's partition and QOS limits decide what a job may really have.
MAX_NODES = 10_000
MAX_TASKS_PER_NODE = 4096
MAX_CPUS_PER_TASK = 4096
MAX_GPUS_PER_NODE = 64
MAX_MEMORY_MB_PER_NODE = 16 * 1024 * 1024
# Linux refuses any single argument longer than MAX_ARG_STRLEN (128 KiB) at exec time.
MAX_ARGUMENT_BYTES = 128 * 1024 - 1
MAX_COMMAND_BYTES = 1024 * 1024
# Well under Slurm's default max_script_size (4 MB), leaving room for directives and exports.
MAX_SCRIPT_BYTES = 1024 * 1024

# Names of Slurm entities: jobs, accounts, partitions, QOS, features, GPU types.
SLURM_NAME_PATTERN = re.compile(r"[A-Za-z0-9_.+-]+", re.ASCII)
# POSIX portable user names (no trailing "$": machine accounts never run jobs).
UNIX_USER_PATTERN = re.compile(r"[a-z_][a-z0-9_-]{0,31}", re.ASCII)
MAX_JOB_ATTEMPT = 10_000
# Slurm job ids (uint32, never 0), optionally one array task: afterok:<id>[_<task>]:...
DEPENDENCY_ID_PATTERN = re.compile(r"[1-9][0-9]{0,9}(?:_[0-9]{1,7})?", re.ASCII)
MAX_DEPENDENCIES = 64
HEARTBEAT_SOURCES = ("wrapper", "program", "off")
MIN_HEARTBEAT_INTERVAL_S = 1
MAX_HEARTBEAT_INTERVAL_S = 60
# Slurm's --signal takes at most 65535 s; below 10 s the program has no time to act (and Slurm's
# timers are coarser than that anyway).
MIN_SIGNAL_BEFORE_LIMIT_S = 10
MAX_SIGNAL_BEFORE_LIMIT_S = 65535
GATEWAY_JOB_ID_PATTERN = re.compile(r"[A-Za-z0-9_.:-]{1,64}", re.ASCII)
# Absolute paths without whitespace, quotes, "#", "\" or "%" (Slurm expands %j etc. in --output).
WORKING_DIR_PATTERN = re.compile(r"/[A-Za-z0-9_.+,=@/-]*", re.ASCII)
# Upper-case POSIX names only, as the API promises; lower-case settings (OMPI_MCA_btl, http_proxy)
# belong in a script body, and fabric tuning comes from the partition's configuration.
ENV_NAME_PATTERN = re.compile(r"[A-Z_][A-Z0-9_]*", re.ASCII)

# Exporting these changes how bash reads the rest of the generated script (IFS, SHELLOPTS, ...)
# or what every program in the job loads (LD_*), so they are never taken from a job spec.
DENIED_ENV_NAMES = frozenset(
    {
        "BASH_ENV",
        "ENV",
        "IFS",
        "PS4",
        "SHELLOPTS",
        "BASHOPTS",
        "PROMPT_COMMAND",
        "BASH_XTRACEFD",
        "GLOBIGNORE",
        "CDPATH",
        "POSIXLY_CORRECT",
    }
)
# LD_*: the dynamic loader. SLURM_*/SBATCH_*/SRUN_*/SALLOC_*: Slurm's own settings, which would
# override the gateway's (account, partition, export mode) for steps and nested submissions.
# PMIX_*/PMI_*: set by the MPI launcher for wire-up. SGW_*: set by the gateway's step wrapper
# ($SGW_OUTPUT_DIR, ...). OMPI_MCA_* stays allowed: tuning Open MPI is ordinary user business
# (this cluster's MPI jobs need OMPI_MCA_btl=self,tcp).
DENIED_ENV_PREFIXES = ("LD_", "SLURM_", "SBATCH_", "SRUN_", "SALLOC_", "PMIX_", "PMI_", "SGW_")

_ARRAY_ITEM = re.compile(r"(\d{1,7})(?:-(\d{1,7})(?::(\d{1,7}))?)?", re.ASCII)
_ARRAY_LIMIT = re.compile(r"\d{1,7}", re.ASCII)
_MAX_ARRAY_TEXT_CHARS = 1024
_ARRAY_HOW_TO = 'use indices and ranges like "0-99", "1,3,5-7", "0-15:4", optionally with "%N" ("0-99%8")'


def is_control_character(char: str) -> bool:
    """C0 controls (including NUL, tab, CR, LF), DEL and C1 controls."""
    code = ord(char)
    return code < 0x20 or 0x7F <= code <= 0x9F


def check_no_control_characters(field: str, value: str, *, allowed: str = "") -> None:
    """Reject control characters (except those in ``allowed``) and text that is not valid UTF-8.

    A newline is how a value would smuggle a second #SBATCH line or shell command into the
    script; NUL cannot be passed to a program at all; CR makes sbatch refuse the script.
    """
    for position, char in enumerate(value):
        if is_control_character(char) and char not in allowed:
            raise JobSpecError(
                field, f"contains the control character {char!r} at position {position}; remove it"
            )
        if 0xD800 <= ord(char) <= 0xDFFF:
            raise JobSpecError(
                field, f"contains an unpaired surrogate at position {position}; send valid UTF-8"
            )


def check_slurm_name(field: str, value: str | None, *, what: str) -> str:
    """Validate a Slurm entity name (job, account, partition, QOS, feature, GPU type)."""
    if not isinstance(value, str) or not value:
        raise JobSpecError(field, f"a {what} is required")
    check_no_control_characters(field, value)
    if len(value) > MAX_NAME_CHARS:
        raise JobSpecError(field, f"the {what} may be at most {MAX_NAME_CHARS} characters long")
    if not SLURM_NAME_PATTERN.fullmatch(value):
        raise JobSpecError(
            field, f"the {what} {value!r} may only contain letters, digits and the characters _ . + -"
        )
    return value


def check_unix_user(value: str) -> str:
    """Validate the Unix user name the job runs as (it goes on sbatch's --uid/--gid)."""
    check_no_control_characters("unix_user", value)
    if not UNIX_USER_PATTERN.fullmatch(value):
        raise JobSpecError(
            "unix_user",
            f"{value!r} is not a valid Unix user name: use lowercase letters, digits, _ and -, "
            "starting with a letter or _, at most 32 characters",
        )
    return value


def check_gateway_job_id(value: str) -> str:
    """Validate the gateway job id that goes into --comment."""
    check_no_control_characters("gateway_job_id", value)
    if not GATEWAY_JOB_ID_PATTERN.fullmatch(value):
        raise JobSpecError("gateway_job_id", "must be 1-64 letters, digits or the characters _ . : -")
    return value


def check_working_dir(value: str) -> str:
    """Validate the job's working directory (goes into --chdir, --output and --error)."""
    check_no_control_characters("working_dir", value)
    if len(value) > MAX_WORKING_DIR_CHARS:
        raise JobSpecError("working_dir", f"may be at most {MAX_WORKING_DIR_CHARS} characters long")
    if not WORKING_DIR_PATTERN.fullmatch(value):
        raise JobSpecError(
            "working_dir",
            "must be an absolute path of letters, digits and the characters _ . + , = @ / - "
            "(no spaces, quotes, # or %)",
        )
    if ".." in value.split("/"):
        raise JobSpecError("working_dir", "must not contain '..' components; give the resolved path")
    return value


def check_count(field: str, value: int, *, minimum: int, maximum: int) -> int:
    """Validate an integer resource count against inclusive bounds."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise JobSpecError(field, "must be a whole number")
    if not minimum <= value <= maximum:
        raise JobSpecError(field, f"must be between {minimum} and {maximum}, not {value}")
    return value


def validate_env(env: Mapping[str, str]) -> None:
    """Validate environment variables the job exports.

    Names must match [A-Z_][A-Z0-9_]* and not be on the deny-lists (shell and loader control,
    Slurm's and the MPI launcher's own variables); values may hold any text but control
    characters. PATH is allowed: the job runs as the user, and the gateway's own lines after
    the exports use only shell builtins and tools found through the PATH the job started with
    (slurm.step_wrapper), so a user PATH cannot redirect them.
    """
    if len(env) > MAX_ENV_VARIABLES:
        raise JobSpecError("env", f"at most {MAX_ENV_VARIABLES} variables are allowed, not {len(env)}")
    total = 0
    for name, value in env.items():
        _check_env_name(name)
        field = f"env.{name}"
        if not isinstance(value, str):
            raise JobSpecError(field, "the value must be a string")
        check_no_control_characters(field, value)
        if len(value) > MAX_ENV_VALUE_CHARS:
            raise JobSpecError(field, f"the value may be at most {MAX_ENV_VALUE_CHARS} characters long")
        total += len(name) + len(value)
    if total > MAX_ENV_TOTAL_CHARS:
        raise JobSpecError(
            "env", f"names and values together may be at most {MAX_ENV_TOTAL_CHARS} characters"
        )


def _check_env_name(name: str) -> None:
    printable = isinstance(name, str) and len(name) <= MAX_ENV_NAME_CHARS and name.isprintable()
    # Only a harmless name may be echoed back inside the field path.
    field = f"env.{name}" if printable and ENV_NAME_PATTERN.fullmatch(name) else "env"
    if not printable or not ENV_NAME_PATTERN.fullmatch(name):
        shown = repr(name)[:MAX_ENV_NAME_CHARS]
        raise JobSpecError(
            field,
            f"variable name {shown} is invalid: use upper-case ASCII letters, digits and _, not starting "
            f"with a digit, at most {MAX_ENV_NAME_CHARS} characters",
        )
    if name in DENIED_ENV_NAMES:
        raise JobSpecError(field, f"{name} controls the shell that runs the job and cannot be set")
    for prefix in DENIED_ENV_PREFIXES:
        if name.startswith(prefix):
            raise JobSpecError(
                field,
                f"variables starting with {prefix} are reserved for the loader, Slurm, MPI and the gateway; "
                "set it inside a script body if you really need it",
            )


def validate_array_spec(text: str, *, max_array_size: int = DEFAULT_MAX_ARRAY_SIZE) -> str:
    """Validate a Slurm job array expression and return it unchanged.

    Accepts comma-separated indices "N", ranges "N-M" and stepped ranges "N-M:S", optionally
    followed by "%P" (at most P tasks at once); every index must be below ``max_array_size``.
    """
    if not isinstance(text, str) or not text:
        raise JobSpecError("array", f"the array expression is empty; {_ARRAY_HOW_TO}")
    check_no_control_characters("array", text)
    if len(text) > _MAX_ARRAY_TEXT_CHARS:
        raise JobSpecError("array", f"the array expression may be at most {_MAX_ARRAY_TEXT_CHARS} characters")
    items_text, percent, limit = text.partition("%")
    if percent:
        _check_array_limit(limit)
    for item in items_text.split(","):
        _check_array_item(item, max_array_size)
    return text


def _check_array_limit(limit: str) -> None:
    if not _ARRAY_LIMIT.fullmatch(limit) or int(limit) < 1:
        raise JobSpecError("array", f'"%{limit}" must be "%" and a positive number of simultaneous tasks')


def _check_array_item(item: str, max_array_size: int) -> None:
    match = _ARRAY_ITEM.fullmatch(item)
    if not match:
        raise JobSpecError("array", f"{item!r} is not an index or range; {_ARRAY_HOW_TO}")
    first, last, step = match.groups()
    highest = int(last) if last is not None else int(first)
    if last is not None and int(last) < int(first):
        raise JobSpecError("array", f"range {item!r} ends before it starts; write it as low-high")
    if step is not None and int(step) < 1:
        raise JobSpecError("array", f"range {item!r} needs a step of at least 1")
    if highest >= max_array_size:
        raise JobSpecError(
            "array", f"index {highest} is too large: this cluster allows indices 0 to {max_array_size - 1}"
        )


def check_step_name(value: str) -> str:
    """Validate the step name, which names directories and links under the working directory."""
    check_slurm_name("step_name", value, what="step name")
    # "." and ".." would escape the layout; a leading "." is reserved for the wrapper's
    # temporary links in outputs/ (".<step>.a<n>.tmp").
    if value.startswith("."):
        raise JobSpecError("step_name", f"the step name {value!r} must not start with '.'")
    return value


def check_dependencies(dependencies: Sequence[str]) -> None:
    """Validate the Slurm job ids a job waits for (--dependency=afterok:<id>:<id>)."""
    if len(dependencies) > MAX_DEPENDENCIES:
        raise JobSpecError("dependencies", f"at most {MAX_DEPENDENCIES} jobs can be waited for")
    for index, job_id in enumerate(dependencies):
        if not isinstance(job_id, str) or not DEPENDENCY_ID_PATTERN.fullmatch(job_id):
            raise JobSpecError(
                f"dependencies[{index}]", "must be a Slurm job id: digits, optionally _ and an array task id"
            )


def check_heartbeat(job: BatchJob) -> None:
    """Validate who touches the heartbeat file and how often the wrapper does."""
    if job.heartbeat not in HEARTBEAT_SOURCES:
        raise JobSpecError("heartbeat", f"must be one of {', '.join(HEARTBEAT_SOURCES)}")
    check_count(
        "heartbeat_interval_s",
        job.heartbeat_interval_s,
        minimum=MIN_HEARTBEAT_INTERVAL_S,
        maximum=MAX_HEARTBEAT_INTERVAL_S,
    )


def check_signal_before_limit(job: BatchJob) -> None:
    """Validate the USR2 warning time: within Slurm's bounds and shorter than the time limit."""
    if job.signal_before_limit_s is None:
        return
    seconds = check_count(
        "signal_before_limit_s",
        job.signal_before_limit_s,
        minimum=MIN_SIGNAL_BEFORE_LIMIT_S,
        maximum=MAX_SIGNAL_BEFORE_LIMIT_S,
    )
    # Slurm would send it as the job starts, before the wrapper can pass it on.
    if seconds >= job.time_limit_minutes * 60:
        raise JobSpecError(
            "signal_before_limit_s", f"must be shorter than the time limit ({job.time_limit_minutes * 60} s)"
        )


def check_command(command: Sequence[str]) -> None:
    """Validate a command argv: non-empty, a program name first, no NUL or other controls.

    Newlines and tabs are allowed inside arguments ("python -c" snippets); they are quoted, and
    they come after the script's first command line, where sbatch reads no more directives.
    """
    if not command:
        raise JobSpecError("command", "the command needs at least the program to run")
    if not command[0]:
        raise JobSpecError("command[0]", "the program name is empty")
    total = 0
    for index, argument in enumerate(command):
        field = f"command[{index}]"
        if not isinstance(argument, str):
            raise JobSpecError(field, "each argument must be a string")
        check_no_control_characters(field, argument, allowed="\n\t")
        size = len(argument.encode())
        if size > MAX_ARGUMENT_BYTES:
            raise JobSpecError(
                field, f"an argument may be at most {MAX_ARGUMENT_BYTES} bytes; pass data in a file"
            )
        total += size
    if total > MAX_COMMAND_BYTES:
        raise JobSpecError("command", f"the arguments may be at most {MAX_COMMAND_BYTES} bytes together")


def check_script_body(script: str) -> None:
    """Validate a bash script body: it is the user's own code, so only what breaks submission.

    NUL and CR make sbatch refuse the script ("DOS line breaks"); other bytes are the user's.
    """
    if not isinstance(script, str) or not script.strip():
        raise JobSpecError("script", "the script is empty; give the bash commands to run")
    if "\0" in script:
        raise JobSpecError("script", "contains a NUL character; upload binary data as a file instead")
    if "\r" in script:
        raise JobSpecError(
            "script", "contains carriage returns (Windows line endings); save it with Unix line endings"
        )
    try:
        size = len(script.encode())
    except UnicodeEncodeError as exc:
        raise JobSpecError("script", f"is not valid UTF-8 at position {exc.start}") from exc
    if size > MAX_SCRIPT_BYTES:
        raise JobSpecError(
            "script", f"the script may be at most {MAX_SCRIPT_BYTES} bytes; put large code in a file"
        )


def validate_batch_job(job: BatchJob) -> None:
    """Validate every field of ``job`` that reaches the batch script or sbatch's argv."""
    check_gateway_job_id(job.gateway_job_id)
    # The attempt goes into --comment too; manual retries may go past any policy's limit.
    check_count("attempt", job.attempt, minimum=1, maximum=MAX_JOB_ATTEMPT)
    check_slurm_name("name", job.name, what="job name")
    check_unix_user(job.unix_user)
    check_slurm_name("account", job.account, what="account")
    check_slurm_name("partition", job.partition, what="partition")
    if job.qos is not None:
        check_slurm_name("qos", job.qos, what="QOS")
    check_working_dir(job.working_dir)
    check_time_limit_minutes(job.time_limit_minutes)
    check_count("nodes", job.nodes, minimum=1, maximum=MAX_NODES)
    check_count("tasks_per_node", job.tasks_per_node, minimum=1, maximum=MAX_TASKS_PER_NODE)
    check_count("cpus_per_task", job.cpus_per_task, minimum=1, maximum=MAX_CPUS_PER_TASK)
    check_count("gpus_per_node", job.gpus_per_node, minimum=0, maximum=MAX_GPUS_PER_NODE)
    if job.gpu_type is not None:
        check_slurm_name("gpu_type", job.gpu_type, what="GPU type")
        if job.gpus_per_node == 0:
            raise JobSpecError(
                "gpu_type", "a GPU type needs gpus_per_node of at least 1; set it or drop gpu_type"
            )
    if job.memory_mb_per_node is not None:
        check_count("memory_mb_per_node", job.memory_mb_per_node, minimum=1, maximum=MAX_MEMORY_MB_PER_NODE)
    for index, feature in enumerate(job.constraints):
        check_slurm_name(f"constraints[{index}]", feature, what="node feature")
    validate_env(job.env)
    if job.array is not None:
        validate_array_spec(job.array)
    check_step_name(job.step_name)
    check_dependencies(job.dependencies)
    check_heartbeat(job)
    check_signal_before_limit(job)
    _check_runtime(job)
    validate_runtime(job)
    validate_placement(job)
    if job.fabric is not None:
        validate_fabric(job.fabric)


def _check_runtime(job: BatchJob) -> None:
    if (job.script is None) == (job.command is None):
        raise JobSpecError(
            "command", "give exactly one of script (a bash script body) and command (an argv list)"
        )
    if job.script is not None:
        check_script_body(job.script)
    else:
        check_command(job.command or ())
