"""The generated step wrapper: runs one attempt of one step and publishes its outputs (pure).

Every batch script ends with these lines, after the job's env exports. They run as the job's
user in the job's working directory and use the layout of slurm.job_layout:

    export SGW_STEP / SGW_ATTEMPT       which step and attempt this Slurm job is
    export SGW_OUTPUTS_DIR              <wd>/outputs: published outputs, one symlink per step,
                                        so a step reads an earlier one's as $SGW_OUTPUTS_DIR/<step>
    export SGW_OUTPUT_DIR               <wd>/.attempts/<step>/a<n>/out (array task t: out/t),
                                        where the program writes; no other attempt writes there
    export SGW_HEARTBEAT_FILE           <wd>/.heartbeat/<step>.a<n> (not with heartbeat "off")
    export SGW_PROGRESS_FILE            <wd>/.progress/<step>.a<n>: progress as JSON lines, the
                                        last complete one wins (an array's tasks share it)
    mkdir -p ...
    sgw-progress() {...}; export -f     the progress command, for the script and for every bash
                                        it starts (see "Progress" below)
    trap ... USR2                       only with signal_before_limit_s: Slurm signals the
                                        batch shell (B:USR2@secs), the wrapper passes it on
    touch; sgw_beat &                   heartbeat "wrapper": touched now and every few seconds
                                        until the wrapper exits (manifest and publication included)
    sgw_main() { <runtime lines> }      slurm.runtimes, unchanged: an ``exec`` in them replaces
    sgw_main "$@" &                     only this background subshell, never the wrapper
    wait ...                            until the program ends (a trapped USR2 cuts ``wait``
                                        short; the status kept is the program's own)
    on status 0 only:
      manifest                          sha256sum lines ("<hex>  ./path", LC_ALL=C order, regular
                                        files only, symlinks skipped) of out/ into manifest.sha256
                                        (array task t: of out/t into manifest.t.sha256), written
                                        to a temporary file and renamed
      publish                           a new symlink outputs/.<step>.a<n>.tmp (array task t:
                                        .<step>.a<n>.t.tmp) renamed over outputs/<step>
                                        (rename(2): readers see the old set or the new, never a
                                        mix); an array publishes once all its task manifests
                                        exist, each task counting after writing its own, so the
                                        last one to finish always publishes
    exit <the program's status>         a failed manifest or publication fails the job (status 1)

One Slurm job runs each attempt of a step (each task, for an array), so no two wrappers ever
write the same attempt's files. The program's status is the wrapper's exit status: a program
killed by signal N ends the job with exit code 128+N. A script body runs inside ``sgw_main``,
so it must be complete bash on its own (a here-document left open at its end would swallow the
wrapper's closing lines).

The wrapper's own tools (mkdir, sha256sum, ln, mv, ...) run with the PATH the job started
with, saved before the job's env exports, so a job's PATH can change what its program finds
but not how its outputs are recorded.

Progress: ``sgw-progress FRACTION|- [MESSAGE] [NAME=NUMBER ...]`` appends one line such as
``{"fraction":0.4,"message":"epoch 4/10","metrics":{"loss":0.31}}`` to $SGW_PROGRESS_FILE
(``-``: no fraction). It is a bash function exported with ``export -f``, so the script and the
bash processes below it (``bash -c``, srun'd bash scripts) have it; it uses builtins only.
Numbers must be JSON numbers and metric names ``[A-Za-z_][A-Za-z0-9_.:/-]{0,63}``, else it
writes nothing and returns 2; quotes and backslashes in the message are escaped, tabs and
newlines become spaces, other control characters are dropped. Any other program reports by
appending such a JSON line itself, e.g. in Python:
``open(os.environ["SGW_PROGRESS_FILE"], "a").write(json.dumps({"fraction": 0.5}) + "\n")``.
The gateway reads the file's last complete valid line (staging.progress_files) and clamps
what it finds, so nothing written there can harm it. The function is fixed text: no value
from the job reaches it.
"""

from __future__ import annotations

import shlex
from pathlib import PurePosixPath

from slurm.batch_job import BatchJob
from slurm.job_layout import (
    ARRAY_MANIFEST_PATTERN,
    MANIFEST_NAME,
    attempt_dir,
    attempt_output_dir,
    heartbeat_file,
    outputs_dir,
    progress_file,
    published_link,
    published_link_target,
)

ARRAY_TASK = '"$SLURM_ARRAY_TASK_ID"'
# A failed manifest or publication fails the job with this status (the program's was 0).
PUBLISH_FAILED_STATUS = 1

# Goes before the job's env exports: the PATH Slurm started the job with.
SAVE_TOOLS_PATH_LINES = [
    "# The wrapper's own tools come from the PATH the job started with, not the job's env.",
    "sgw_path=${PATH:-/usr/bin:/bin}",
]

_USR2_LINES = [
    "# Slurm signals only this shell (--signal=B:USR2); the program gets the warning from here.",
    """trap 'kill -USR2 "$sgw_child" 2>/dev/null || true' USR2""",
]

_WAIT_LINES = [
    'sgw_main "$@" &',
    "sgw_child=$!",
    "# A trapped signal cuts `wait` short while the program still runs: wait until it is gone,",
    "# then once more for its status (bash keeps the status of an ended background job).",
    'while kill -0 "$sgw_child" 2>/dev/null; do wait "$sgw_child" || true; done',
    "sgw_status=0",
    'wait "$sgw_child" || sgw_status=$?',
]

# The progress command (see the module docstring). LC_ALL=C: the control-character range is
# matched byte by byte, which leaves UTF-8 text (bytes >= 0x80) as it is.
PROGRESS_COMMAND_LINES = [
    "# sgw-progress FRACTION|- [MESSAGE] [NAME=NUMBER ...]: one JSON line onto $SGW_PROGRESS_FILE.",
    "# Called by the job's script and the bash processes it starts, which shellcheck cannot see.",
    "# shellcheck disable=SC2317",
    "sgw-progress() {",
    "  local LC_ALL=C",
    "  local number='^-?(0|[1-9][0-9]*)([.][0-9]+)?([eE][-+]?[0-9]+)?$'",
    "  local name='^[A-Za-z_][A-Za-z0-9_.:/-]{0,63}$'",
    '  if [[ -z "${SGW_PROGRESS_FILE-}" ]]; then',
    '    echo "sgw-progress: SGW_PROGRESS_FILE is not set" >&2',
    "    return 1",
    "  fi",
    "  if (( $# == 0 )); then",
    "    echo 'usage: sgw-progress FRACTION|- [MESSAGE] [NAME=NUMBER ...]' >&2",
    "    return 2",
    "  fi",
    "  local fraction=$1 message=${2-} metrics='' metric",
    "  if [[ $fraction == - ]]; then",
    "    fraction=null",
    "  elif ! [[ $fraction =~ $number ]]; then",
    '    echo "sgw-progress: the fraction is not a number: $fraction" >&2',
    "    return 2",
    "  fi",
    r"  message=${message//\\/\\\\}",
    r"  message=${message//\"/\\\"}",
    r"  message=${message//[$'\t'$'\n']/ }",
    r"  message=${message//[$'\001'-$'\037']/}",
    '  for metric in "${@:3}"; do',
    "    if ! [[ ${metric%%=*} =~ $name && ${metric#*=} =~ $number ]]; then",
    '      echo "sgw-progress: not NAME=NUMBER: $metric" >&2',
    "      return 2",
    "    fi",
    r'    metrics+="${metrics:+,}\"${metric%%=*}\":${metric#*=}"',
    "  done",
    r'  local json="{\"fraction\":$fraction,\"message\":\"$message\",\"metrics\":{$metrics}}"',
    '  printf "%s\\n" "$json" >> "$SGW_PROGRESS_FILE"',
    "}",
    "export -f sgw-progress",
]

# After the program. Called left of `||`, where errexit is off, so every command is chained.
_PUBLISH_FUNCTIONS = [
    "# sha256sum lines of the regular files under out/$sgw_hashed, written to $sgw_manifest at once.",
    "sgw_write_manifest() {",
    "  local PATH=$sgw_path",
    '  (cd -- "$sgw_out" && find "$sgw_hashed" -type f -print0 | LC_ALL=C sort -z |',
    '    xargs -0r sha256sum --) > "$sgw_manifest.tmp" && mv -f -- "$sgw_manifest.tmp" "$sgw_manifest"',
    "}",
    "sgw_publish() {",
    "  local PATH=$sgw_path",
    '  ln -sfn -- "$sgw_publish_target" "$sgw_publish_temp" &&',
    '    mv -Tf -- "$sgw_publish_temp" "$sgw_published"',
    "}",
    "sgw_fail() {",
    '  echo "slurm-gateway: step $SGW_STEP attempt $SGW_ATTEMPT: $1" >&2',
    f"  exit {PUBLISH_FAILED_STATUS}",
    "}",
]


def render_step_wrapper(job: BatchJob, program_lines: list[str]) -> list[str]:
    """The lines after the env exports that run ``program_lines`` as one attempt of the step.

    ``job`` has been validated (slurm.job_validation); every path is derived from its working
    directory, step name and attempt, and reaches the shell through ``shlex.quote``.
    """
    return [
        "# The step wrapper (slurm.step_wrapper): outputs, heartbeat, manifest and publication.",
        *_variable_lines(job),
        'sgw_tool() { local PATH=$sgw_path; "$@"; }',
        *_directory_lines(job),
        *PROGRESS_COMMAND_LINES,
        "sgw_child=",
        *(_USR2_LINES if job.signal_before_limit_s is not None else []),
        *_heartbeat_lines(job),
        "# The program: the runtime's lines, in a background subshell of their own. Their helper",
        "# functions run from traps and other shells, which shellcheck cannot see.",
        "# shellcheck disable=SC2317",
        "sgw_main() {",
        *program_lines,
        "}",
        *_WAIT_LINES,
        *(_BEAT_START_LINES if job.heartbeat == "program" else []),
        *_PUBLISH_FUNCTIONS,
        *(_publish_lines() if job.array is None else _array_publish_lines(job)),
        'exit "$sgw_status"',
    ]


def _variable_lines(job: BatchJob) -> list[str]:
    step, attempt, working_dir = job.step_name, job.attempt, job.working_dir
    out = shlex.quote(attempt_output_dir(working_dir, step, attempt))
    directory = shlex.quote(attempt_dir(working_dir, step, attempt))
    outputs = outputs_dir(working_dir)
    temp_link = shlex.quote(f"{outputs}/.{step}.a{attempt}")
    if job.array is None:
        output_dir, hashed, manifest, temp = out, ".", f"{directory}/{MANIFEST_NAME}", f"{temp_link}.tmp"
    else:
        # Each task writes below out/<task>, hashes only that and publishes through a link of
        # its own, so tasks finishing together never touch each other's files.
        output_dir, hashed = f"{out}/{ARRAY_TASK}", f"./{ARRAY_TASK}"
        manifest = f"{directory}/{ARRAY_MANIFEST_PATTERN.format(task=ARRAY_TASK)}"
        temp = f"{temp_link}.{ARRAY_TASK}.tmp"
    lines = [
        f"export SGW_STEP={shlex.quote(step)}",
        f"export SGW_ATTEMPT={attempt}",
        f"export SGW_OUTPUTS_DIR={shlex.quote(outputs)}",
        f"export SGW_OUTPUT_DIR={output_dir}",
    ]
    if job.heartbeat != "off":
        lines.append(f"export SGW_HEARTBEAT_FILE={shlex.quote(heartbeat_file(working_dir, step, attempt))}")
    lines.append(f"export SGW_PROGRESS_FILE={shlex.quote(progress_file(working_dir, step, attempt))}")
    return [
        *lines,
        f"sgw_out={out}",
        f"sgw_hashed={hashed}",
        f"sgw_manifest={manifest}",
        f"sgw_published={shlex.quote(published_link(working_dir, step))}",
        f"sgw_publish_target={shlex.quote(published_link_target(step, attempt))}",
        f"sgw_publish_temp={temp}",
    ]


def _directory_lines(job: BatchJob) -> list[str]:
    progress = PurePosixPath(progress_file(job.working_dir, job.step_name, job.attempt)).parent
    directories = ['"$SGW_OUTPUT_DIR"', '"$SGW_OUTPUTS_DIR"', shlex.quote(str(progress))]
    if job.heartbeat != "off":
        beat = heartbeat_file(job.working_dir, job.step_name, job.attempt)
        directories.append(shlex.quote(str(PurePosixPath(beat).parent)))
    return [f"sgw_tool mkdir -p -- {' '.join(directories)}"]


def _heartbeat_lines(job: BatchJob) -> list[str]:
    if job.heartbeat == "off":
        return []
    lines = [
        "# Heartbeat: touched now, then every few seconds until the wrapper exits (TERM ends the",
        "# loop and its sleep at once).",
        "sgw_beat() {",
        "  local PATH=$sgw_path",
        "  trap 'kill \"${!-}\" 2>/dev/null; exit 0' TERM",
        "  while :; do",
        f'    sleep {job.heartbeat_interval_s} & wait "$!"',
        '    touch -- "$SGW_HEARTBEAT_FILE" || true',
        "  done",
        "}",
    ]
    if job.heartbeat == "program":
        # The program beats while it runs; the wrapper only once it ended (hashing a large
        # output must not look like a hang).
        return lines
    return [*lines, *_BEAT_START_LINES]


_BEAT_START_LINES = [
    'sgw_tool touch -- "$SGW_HEARTBEAT_FILE"',
    "sgw_beat &",
    "sgw_beater=$!",
    "trap 'kill \"$sgw_beater\" 2>/dev/null || true' EXIT",
]


def _publish_lines() -> list[str]:
    return [
        "# Only a successful attempt records and publishes its outputs.",
        "if (( sgw_status == 0 )); then",
        '  sgw_write_manifest || sgw_fail "could not write the manifest"',
        '  sgw_publish || sgw_fail "could not publish the outputs"',
        "fi",
    ]


def _array_publish_lines(job: BatchJob) -> list[str]:
    directory = shlex.quote(attempt_dir(job.working_dir, job.step_name, job.attempt))
    return [
        "# Whether every task of the array has written its manifest (this task's included).",
        "sgw_all_tasks_done() {",
        "  local manifest count=0",
        f"  for manifest in {directory}/{ARRAY_MANIFEST_PATTERN.format(task='*')}; do",
        '    if [[ -f "$manifest" ]]; then count=$(( count + 1 )); fi',
        "  done",
        "  (( count == SLURM_ARRAY_TASK_COUNT ))",
        "}",
        "# Only a successful task records its outputs, before counting: the last task to finish",
        "# always sees every manifest and publishes.",
        "if (( sgw_status == 0 )); then",
        '  sgw_write_manifest || sgw_fail "could not write the manifest"',
        "  if sgw_all_tasks_done; then",
        '    sgw_publish || sgw_fail "could not publish the outputs"',
        "  fi",
        "fi",
    ]
