"""The rendered batch script: recorded expectations, bash -n, shellcheck, and running it locally.

The step wrapper (slurm.step_wrapper) is run here with bash in a temporary working directory,
without Slurm: Slurm's part (SLURM_ARRAY_TASK_ID, the USR2 warning) is played by the test.
"""

import hashlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from slurm import job_layout
from slurm.batch_job import BatchJob
from slurm.batch_script import build_sbatch_argv, render_batch_script, sbatch_environment
from slurm.errors import JobSpecError

RENDERED = Path(__file__).parent / "fixtures" / "rendered"
# SC2016 ("expressions don't expand in single quotes") and SC1003 ("want to escape a single
# quote?") are informational and exactly the point: quoted arguments and env values stay literal.
SHELLCHECK_EXCLUDES = "SC2016,SC1003"

INJECTION_PAYLOADS = [
    "$(touch CANARY)",
    "`touch CANARY`",
    "; touch CANARY",
    "&& touch CANARY",
    "| touch CANARY",
    "'; touch CANARY; '",
    '"; touch CANARY; "',
    "\\",
    "\\'",
    "#SBATCH --uid=0",
    "x\n#SBATCH --uid=0",
    "${IFS}touch${IFS}CANARY",
    "* ? [a-z] ~ {a,b}",
    "-n",
    "--",
    "",
    " leading and trailing ",
    "tab\there",
    "unicode ✓ 日本語 \U0001f600",
    "x" * 10_000,
]


def make_job(**changes: Any) -> BatchJob:
    fields: dict[str, Any] = {
        "gateway_job_id": "01J0ABCDEF",
        "name": "train",
        "unix_user": "alice",
        "account": "physics",
        "partition": "cpu",
        "working_dir": "/var/lib/slurm-gateway/jobs/01J0ABCDEF",
        "time_limit_minutes": 30,
        "command": ("python3", "train.py", "--epochs", "3"),
    }
    fields.update(changes)
    return BatchJob(**fields)


REPRESENTATIVE_JOBS = {
    "cpu_command": make_job(),
    "gpu_array": make_job(
        name="sweep",
        partition="gpu",
        qos="normal",
        nodes=2,
        tasks_per_node=4,
        cpus_per_task=2,
        gpus_per_node=4,
        gpu_type="h100",
        memory_mb_per_node=3500,
        constraints=("ib", "h100"),
        env={"OMP_NUM_THREADS": "2", "OMPI_MCA_PML": "ob1", "NOTE": "it's $(literal)"},
        array="0-15:4%2",
        time_limit_minutes=2 * 1440 + 185,
        command=("srun", "--mpi=pmix", "./sweep", "--index", "$SLURM_ARRAY_TASK_ID"),
    ),
    "gpu_untyped": make_job(partition="gpu", gpus_per_node=1, command=("nvidia-smi",)),
    "script_body": make_job(
        command=None,
        env={"DATA": "/var/lib/data set"},
        script='#!/bin/bash\n#SBATCH --uid=0\necho "running on $(hostname)"\nsrun ./step.sh\n',
    ),
    # The second step of a multi-step job, retried: its own attempt dir, after two Slurm jobs.
    "chained_step": make_job(
        step_name="train",
        attempt=2,
        dependencies=("4711", "4712_3"),
        heartbeat="program",
        signal_before_limit_s=120,
        command=("python3", "train.py", "--resume", "$SGW_OUTPUT_DIR/ckpt"),
    ),
}
# Every shape of the wrapper: arrays, dependencies, the USR2 warning, each heartbeat source.
WRAPPER_VARIANTS = {
    "array": make_job(array="0-3"),
    "dependencies": make_job(dependencies=("17", "18_2")),
    "signal": make_job(signal_before_limit_s=60),
    "heartbeat_wrapper": make_job(heartbeat="wrapper", heartbeat_interval_s=5),
    "heartbeat_program": make_job(heartbeat="program"),
    "heartbeat_off": make_job(heartbeat="off"),
    "everything_body": make_job(
        command=None,
        script="echo hi\n",
        array="1-7:2",
        step_name="post-process.v2",
        dependencies=("99",),
        signal_before_limit_s=65535,
        time_limit_minutes=2 * 1440,
    ),
}


@pytest.mark.parametrize("name", sorted(REPRESENTATIVE_JOBS))
def test_rendered_script_matches_the_recorded_one(name: str) -> None:
    expected = (RENDERED / f"{name}.sh").read_text()
    assert render_batch_script(REPRESENTATIVE_JOBS[name]) == expected


@pytest.mark.parametrize("name", sorted(REPRESENTATIVE_JOBS.keys() | WRAPPER_VARIANTS.keys()))
def test_rendered_script_passes_bash_n_and_shellcheck(name: str, tmp_path: Path) -> None:
    path = tmp_path / "job.sh"
    path.write_text(render_batch_script({**REPRESENTATIVE_JOBS, **WRAPPER_VARIANTS}[name]))
    subprocess.run(["bash", "-n", str(path)], check=True, capture_output=True)
    assert shutil.which("shellcheck"), "shellcheck is missing: `make test` installs it"
    result = subprocess.run(
        ["shellcheck", "--shell=bash", f"--exclude={SHELLCHECK_EXCLUDES}", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout


def test_injection_corpus_passes_shellcheck(tmp_path: Path) -> None:
    job = make_job(
        array="0-3",
        signal_before_limit_s=60,
        command=("printf", "%s\\0", *INJECTION_PAYLOADS),
        env={f"P{i}": p for i, p in enumerate(INJECTION_PAYLOADS) if "\n" not in p and "\t" not in p},
    )
    path = tmp_path / "job.sh"
    path.write_text(render_batch_script(job))
    result = subprocess.run(
        ["shellcheck", f"--exclude={SHELLCHECK_EXCLUDES}", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout


def directive_region(script: str) -> list[str]:
    """The #SBATCH lines sbatch reads: those before the first non-blank, non-comment line."""
    directives = []
    for line in script.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            break
        if line.startswith("#SBATCH"):
            directives.append(line)
    return directives


def test_directives_are_exactly_the_jobs() -> None:
    assert directive_region(render_batch_script(REPRESENTATIVE_JOBS["gpu_array"])) == [
        "#SBATCH --job-name=sweep",
        "#SBATCH --account=physics",
        "#SBATCH --partition=gpu",
        "#SBATCH --qos=normal",
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=4",
        "#SBATCH --cpus-per-task=2",
        "#SBATCH --gres=gpu:h100:4",
        "#SBATCH --mem=3500M",
        "#SBATCH --time=2-03:05:00",
        "#SBATCH --constraint=ib&h100",
        "#SBATCH --array=0-15:4%2",
        "#SBATCH --comment=sgw:01J0ABCDEF",
        "#SBATCH --chdir=/var/lib/slurm-gateway/jobs/01J0ABCDEF",
        "#SBATCH --output=/var/lib/slurm-gateway/jobs/01J0ABCDEF/slurm-%A_%a.out",
        "#SBATCH --error=/var/lib/slurm-gateway/jobs/01J0ABCDEF/slurm-%A_%a.err",
    ]


def test_step_directives() -> None:
    directives = directive_region(render_batch_script(REPRESENTATIVE_JOBS["chained_step"]))
    assert "#SBATCH --dependency=afterok:4711:4712_3" in directives
    assert "#SBATCH --signal=B:USR2@120" in directives
    assert "#SBATCH --dependency=afterok:5" in directive_region(
        render_batch_script(make_job(dependencies=("5",)))
    )


def test_optional_directives_are_left_out() -> None:
    directives = directive_region(render_batch_script(make_job()))
    optional = ("--qos", "--gres", "--mem", "--constraint", "--array", "--dependency", "--signal")
    assert not [d for d in directives if d.split("=")[0] in {f"#SBATCH {o}" for o in optional}]
    assert "#SBATCH --output=/var/lib/slurm-gateway/jobs/01J0ABCDEF/slurm-%j.out" in directives


def test_injected_text_never_adds_a_directive() -> None:
    plain = directive_region(render_batch_script(make_job()))
    for payload in INJECTION_PAYLOADS:
        job = make_job(
            command=("echo", payload, f"\n{payload}"),
            env={"X": payload.replace("\n", " ").replace("\t", " ")},
        )
        assert directive_region(render_batch_script(job)) == plain
    script_job = REPRESENTATIVE_JOBS["script_body"]
    assert "#SBATCH --uid=0" not in directive_region(render_batch_script(script_job))
    for wrapped in WRAPPER_VARIANTS.values():
        # Nothing the wrapper adds comes before the first command.
        assert directive_region(render_batch_script(wrapped))[-1].startswith("#SBATCH --error=")


def write_locally(job: BatchJob, cwd: Path) -> tuple[BatchJob, Path]:
    """The job moved to ``cwd`` (its working directory), with its script written there."""
    job = msgspec.structs.replace(job, working_dir=str(cwd))
    path = cwd / f"job-{job.step_name}-a{job.attempt}.sh"
    path.write_text(render_batch_script(job))
    return job, path


def run_wrapper(job: BatchJob, cwd: Path, **env: str) -> subprocess.CompletedProcess[bytes]:
    """Run the rendered script with bash in ``cwd`` (the #SBATCH lines are comments to bash)."""
    job, path = write_locally(job, cwd)
    return subprocess.run(
        ["bash", str(path)],
        cwd=cwd,
        capture_output=True,
        check=False,
        timeout=30,
        env={"PATH": "/usr/bin:/bin", **env},
    )


def run_locally(job: BatchJob, cwd: Path) -> bytes:
    """Run the rendered script; it must succeed. Its stdout."""
    result = run_wrapper(job, cwd)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_command_arguments_arrive_byte_for_byte(tmp_path: Path) -> None:
    job = make_job(command=("printf", "%s\\0", *INJECTION_PAYLOADS))
    output = run_locally(job, tmp_path)
    assert output.split(b"\0")[:-1] == [p.encode() for p in INJECTION_PAYLOADS]
    assert not list(tmp_path.glob("CANARY*"))


def test_env_values_arrive_byte_for_byte_and_steps_inherit_them(tmp_path: Path) -> None:
    payloads = [p for p in INJECTION_PAYLOADS if "\n" not in p and "\t" not in p]
    env = {f"P{i}": payload for i, payload in enumerate(payloads)}
    reader = "import os,sys; sys.stdout.write('\\0'.join(os.environ[k] for k in sys.argv[1:]))"
    job = make_job(env=env, command=("python3", "-c", reader, *env, "SLURM_EXPORT_ENV"))
    output = run_locally(job, tmp_path)
    assert output.decode().split("\0") == [*payloads, "ALL"]
    assert not list(tmp_path.glob("CANARY*"))


def test_a_program_that_looks_like_an_option_is_still_the_program(tmp_path: Path) -> None:
    (tmp_path / "-c").write_text("#!/bin/sh\necho dash-c ran\n")
    (tmp_path / "-c").chmod(0o755)
    assert run_locally(make_job(command=("./-c",)), tmp_path) == b"dash-c ran\n"
    with pytest.raises(AssertionError, match="not found"):
        run_locally(make_job(command=("-c", "echo option")), tmp_path)


def test_script_body_runs_verbatim_with_bash_defaults(tmp_path: Path) -> None:
    body = '#SBATCH --uid=0\nfalse\necho "unset=[${NOT_SET}]"\nfalse | true\necho "status=$? data=$DATA"\n'
    job = make_job(command=None, script=body, env={"DATA": "a b"})
    assert "\nset +euo pipefail\n" + body + "\n}\n" in render_batch_script(job)
    assert run_locally(job, tmp_path) == b"unset=[]\nstatus=0 data=a b\n"


# --- the step wrapper, run locally -------------------------------------------------


def attempt_dir(cwd: Path, step: str = "main", attempt: int = 1) -> Path:
    return Path(job_layout.attempt_dir(str(cwd), step, attempt))


def published(cwd: Path, step: str = "main") -> Path:
    return Path(job_layout.published_link(str(cwd), step))


def expected_manifest(out: Path, under: str = ".") -> bytes:
    """sha256sum lines for the regular files below out/<under>, computed here with hashlib."""
    files = sorted(
        (path for path in (out / under).rglob("*") if path.is_file() and not path.is_symlink()),
        key=lambda path: os.fsencode(path.relative_to(out)),
    )
    return b"".join(
        f"{hashlib.sha256(path.read_bytes()).hexdigest()}  ./{path.relative_to(out)}\n".encode()
        for path in files
    )


WRITE_OUTPUTS = """
cd "$SGW_OUTPUT_DIR"
printf 'weights' > model.bin
mkdir -p 'sub dir/deeper' B a
printf 'x%.0s' {1..100000} > 'sub dir/deeper/big file'
: > empty
echo upper > B/z; echo lower > a/z; echo dot > a.z
ln -s model.bin link-to-model
ln -s 'sub dir' link-to-dir
"""


def test_a_successful_attempt_records_and_publishes_its_outputs(tmp_path: Path) -> None:
    job = make_job(command=None, script=WRITE_OUTPUTS, attempt=2)
    run_locally(job, tmp_path)
    attempt = attempt_dir(tmp_path, attempt=2)
    manifest = (attempt / job_layout.MANIFEST_NAME).read_bytes()
    assert manifest == expected_manifest(attempt / "out")
    # C order, regular files only (the symlinks are left out), paths relative to out/.
    assert [line.split(b"  ", 1)[1] for line in manifest.splitlines()] == [
        b"./B/z",
        b"./a.z",
        b"./a/z",
        b"./empty",
        b"./model.bin",
        b"./sub dir/deeper/big file",
    ]
    link = published(tmp_path)
    assert os.readlink(link) == job_layout.published_link_target("main", 2)
    assert link.resolve() == (attempt / "out").resolve()
    assert sorted(p.name for p in link.parent.iterdir()) == ["main"]  # no temporary link left
    assert not list(attempt.glob("*.tmp"))
    # sha256sum itself agrees, reading the files through the published link.
    check = ["sha256sum", "--check", "--quiet", str(attempt / "manifest.sha256")]
    assert subprocess.run(check, cwd=link, check=False).returncode == 0


def test_the_environment_names_the_step_attempt_and_directories(tmp_path: Path) -> None:
    job = make_job(
        step_name="train",
        attempt=3,
        command=(
            "sh",
            "-c",
            'printf "%s|" "$SGW_STEP" "$SGW_ATTEMPT" "$SGW_OUTPUT_DIR" "$SGW_OUTPUTS_DIR" '
            '"$SGW_HEARTBEAT_FILE"; test -d "$SGW_OUTPUT_DIR" && test -d "$SGW_OUTPUTS_DIR"',
        ),
    )
    cwd = str(tmp_path)
    assert run_locally(job, tmp_path).decode().split("|")[:-1] == [
        "train",
        "3",
        job_layout.attempt_output_dir(cwd, "train", 3),
        job_layout.outputs_dir(cwd),
        job_layout.heartbeat_file(cwd, "train", 3),
    ]


def test_a_later_attempt_replaces_the_published_outputs(tmp_path: Path) -> None:
    for attempt in (1, 2):
        run_locally(
            make_job(attempt=attempt, command=("sh", "-c", f'echo {attempt} > "$SGW_OUTPUT_DIR/n"')), tmp_path
        )
        assert (published(tmp_path) / "n").read_text() == f"{attempt}\n"
    assert os.readlink(published(tmp_path)) == job_layout.published_link_target("main", 2)


def test_a_failed_attempt_keeps_its_status_and_publishes_nothing(tmp_path: Path) -> None:
    job = make_job(command=("sh", "-c", 'echo partial > "$SGW_OUTPUT_DIR/part"; exit 7'))
    assert run_wrapper(job, tmp_path).returncode == 7
    attempt = attempt_dir(tmp_path)
    assert (attempt / "out" / "part").read_text() == "partial\n"
    assert sorted(p.name for p in attempt.iterdir()) == ["out"]  # no manifest
    assert not published(tmp_path).exists() and not published(tmp_path).is_symlink()


def test_a_failed_attempt_leaves_the_earlier_publication_alone(tmp_path: Path) -> None:
    run_locally(make_job(attempt=1, command=("true",)), tmp_path)
    assert run_wrapper(make_job(attempt=2, command=("false",)), tmp_path).returncode == 1
    assert os.readlink(published(tmp_path)) == job_layout.published_link_target("main", 1)


def test_a_failed_publication_fails_the_job_with_one_line(tmp_path: Path) -> None:
    # A real directory where the link belongs: rename(2) cannot replace it.
    (published(tmp_path) / "in-the-way").mkdir(parents=True)
    result = run_wrapper(make_job(command=("true",)), tmp_path)
    assert result.returncode == 1
    assert result.stderr.decode().splitlines()[-1] == (
        "slurm-gateway: step main attempt 1: could not publish the outputs"
    )
    assert (attempt_dir(tmp_path) / "manifest.sha256").exists()


def test_the_wrapper_tools_ignore_the_jobs_path(tmp_path: Path) -> None:
    job = make_job(
        env={"PATH": "/nonexistent"}, command=("/bin/sh", "-c", 'echo "$PATH" > "$SGW_OUTPUT_DIR/p"')
    )
    run_locally(job, tmp_path)
    assert (published(tmp_path) / "p").read_text() == "/nonexistent\n"


def run_array_task(job: BatchJob, cwd: Path, task: int, count: int) -> int:
    env = {"SLURM_ARRAY_TASK_ID": str(task), "SLURM_ARRAY_TASK_COUNT": str(count)}
    return run_wrapper(job, cwd, **env).returncode


def test_an_array_publishes_once_every_task_has_succeeded(tmp_path: Path) -> None:
    job = make_job(array="0-2", command=("sh", "-c", 'echo "$SLURM_ARRAY_TASK_ID" > "$SGW_OUTPUT_DIR/r"'))
    attempt = attempt_dir(tmp_path)
    for task in (2, 0):
        assert run_array_task(job, tmp_path, task, 3) == 0
        assert not published(tmp_path).is_symlink()
    assert run_array_task(job, tmp_path, 1, 3) == 0
    assert os.readlink(published(tmp_path)) == job_layout.published_link_target("main", 1)
    for task in range(3):
        manifest = (attempt / job_layout.ARRAY_MANIFEST_PATTERN.format(task=task)).read_bytes()
        assert manifest == expected_manifest(attempt / "out", str(task))
        assert manifest.endswith(f"  ./{task}/r\n".encode()) and manifest.count(b"\n") == 1
    assert (published(tmp_path) / "1" / "r").read_text() == "1\n"
    assert sorted(p.name for p in published(tmp_path).parent.iterdir()) == ["main"]


def test_an_array_with_a_failed_task_publishes_nothing(tmp_path: Path) -> None:
    job = make_job(array="0-1", command=("sh", "-c", 'exit "$SLURM_ARRAY_TASK_ID"'))
    assert run_array_task(job, tmp_path, 1, 2) == 1
    assert run_array_task(job, tmp_path, 0, 2) == 0
    assert not published(tmp_path).is_symlink()
    assert [p.name for p in attempt_dir(tmp_path).glob("manifest.*")] == ["manifest.0.sha256"]


def start_wrapper(job: BatchJob, cwd: Path) -> subprocess.Popen[bytes]:
    job, path = write_locally(job, cwd)
    return subprocess.Popen(
        ["bash", str(path)],
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def wait_for_file(path: Path, process: subprocess.Popen[bytes]) -> None:
    """Wait until the running wrapper's program has created ``path``."""
    deadline = time.monotonic() + 10
    while not path.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"{path} never appeared: {process.communicate()}")
        time.sleep(0.05)


# The program: ready once its USR2 handler is in place; on USR2 it writes a marker and exits 0.
CHECKPOINT_ON_USR2 = """
trap 'echo checkpointed > "$SGW_OUTPUT_DIR/marker"; kill "$sleeper"; exit 0' USR2
sleep 20 & sleeper=$!
touch "$SGW_OUTPUT_DIR/ready"
wait "$sleeper"
exit 9
"""


def test_usr2_is_forwarded_to_the_program(tmp_path: Path) -> None:
    process = start_wrapper(
        make_job(command=None, script=CHECKPOINT_ON_USR2, signal_before_limit_s=60), tmp_path
    )
    wait_for_file(attempt_dir(tmp_path) / "out" / "ready", process)
    process.send_signal(signal.SIGUSR2)
    _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0, stderr
    assert (published(tmp_path) / "marker").read_text() == "checkpointed\n"


def test_usr2_keeps_the_status_of_a_program_that_carries_on(tmp_path: Path) -> None:
    # The trapped signal cuts the wrapper's wait short; the status is still the program's.
    script = 'trap "echo got-it" USR2\ntouch "$SGW_OUTPUT_DIR/ready"\nsleep 1 & wait $!; sleep 0.5\nexit 5\n'
    process = start_wrapper(make_job(command=None, script=script, signal_before_limit_s=60), tmp_path)
    wait_for_file(attempt_dir(tmp_path) / "out" / "ready", process)
    process.send_signal(signal.SIGUSR2)
    stdout, _ = process.communicate(timeout=10)
    assert (process.returncode, stdout) == (5, b"got-it\n")


def test_usr2_to_a_program_without_a_handler_ends_it(tmp_path: Path) -> None:
    job = make_job(
        command=("sh", "-c", 'touch "$SGW_OUTPUT_DIR/ready"; exec sleep 20'), signal_before_limit_s=60
    )
    process = start_wrapper(job, tmp_path)
    wait_for_file(attempt_dir(tmp_path) / "out" / "ready", process)
    process.send_signal(signal.SIGUSR2)
    process.communicate(timeout=10)
    assert process.returncode == 128 + signal.SIGUSR2
    assert not published(tmp_path).is_symlink()


def test_the_wrapper_touches_the_heartbeat_while_the_program_runs(tmp_path: Path) -> None:
    job = make_job(heartbeat_interval_s=1, command=("sleep", "3.5"))
    beat = Path(job_layout.heartbeat_file(str(tmp_path), "main", 1))
    process = start_wrapper(job, tmp_path)
    seen = set()
    while process.poll() is None:
        if beat.exists():
            seen.add(beat.stat().st_mtime_ns)
        time.sleep(0.1)
    _, stderr = process.communicate()
    assert process.returncode == 0, stderr
    assert len(seen) >= 3, seen
    # The loop ends with the wrapper: no more beats afterwards.
    last = beat.stat().st_mtime_ns
    time.sleep(1.5)
    assert beat.stat().st_mtime_ns == last


def test_the_heartbeat_loop_does_not_outlive_the_wrapper(tmp_path: Path) -> None:
    # A sleep left behind would hold the output pipes open until it ends.
    started = time.monotonic()
    run_locally(make_job(heartbeat_interval_s=30, command=("true",)), tmp_path)
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("source", ["program", "off"])
def test_only_the_program_touches_the_heartbeat_unless_the_wrapper_does(source: str, tmp_path: Path) -> None:
    probe = (
        'echo "${SGW_HEARTBEAT_FILE-unset}"\n'
        'if [ -e "${SGW_HEARTBEAT_FILE-/nonexistent}" ]; then echo beating; fi'
    )
    output = run_locally(make_job(heartbeat=source, command=("sh", "-c", probe)), tmp_path).decode().split()
    beat = job_layout.heartbeat_file(str(tmp_path), "main", 1)
    # Nobody beat while the program ran.
    assert output == ([beat] if source == "program" else ["unset"])
    # "program": the wrapper beats once the program ended, while it hashes and publishes.
    assert Path(beat).exists() == (source == "program")


def test_the_program_can_touch_its_heartbeat(tmp_path: Path) -> None:
    run_locally(make_job(heartbeat="program", command=("sh", "-c", 'touch "$SGW_HEARTBEAT_FILE"')), tmp_path)
    assert Path(job_layout.heartbeat_file(str(tmp_path), "main", 1)).is_file()


def test_command_runtime_stops_at_the_programs_exit_status(tmp_path: Path) -> None:
    assert run_wrapper(make_job(command=("sh", "-c", "exit 7")), tmp_path).returncode == 7


def test_sbatch_argv_carries_identity_and_export_mode_only() -> None:
    assert build_sbatch_argv(make_job(unix_user="bob")) == [
        "sbatch",
        "--parsable",
        "--uid=bob",
        "--gid=bob",
        "--export=NONE",
        "--no-requeue",
    ]


def test_sbatch_argv_validates_the_job() -> None:
    with pytest.raises(JobSpecError) as excinfo:
        build_sbatch_argv(make_job(unix_user="root --uid=0"))
    assert excinfo.value.field == "unix_user"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"constraints": ("ib", "h100\n#SBATCH --uid=0")}, "constraints[1]"),
        ({"step_name": "x\n#SBATCH --uid=0"}, "step_name"),
        ({"step_name": "../../etc"}, "step_name"),
        ({"dependencies": ("1", "2\n#SBATCH --uid=0")}, "dependencies[1]"),
        ({"dependencies": ("1:2",)}, "dependencies[0]"),
        ({"signal_before_limit_s": 5}, "signal_before_limit_s"),
        ({"heartbeat_interval_s": 0}, "heartbeat_interval_s"),
        ({"env": {"SGW_OUTPUT_DIR": "/etc"}}, "env.SGW_OUTPUT_DIR"),
    ],
)
def test_render_rejects_invalid_jobs_naming_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(JobSpecError) as excinfo:
        render_batch_script(make_job(**changes))
    assert excinfo.value.field == field


def test_sbatch_environment_keeps_only_what_sbatch_needs() -> None:
    parent = {
        "PATH": "/usr/bin",
        "SLURM_CONF": "/etc/slurm/slurm.conf",
        "LANG": "C.UTF-8",
        "SBATCH_ACCOUNT": "other",
        "SLURM_ACCOUNT": "other",
        "SGW_DATABASE_URL": "postgres://secret",
        "HOME": "/root",
        "LD_PRELOAD": "/x.so",
    }
    assert sbatch_environment(parent) == {
        "PATH": "/usr/bin",
        "SLURM_CONF": "/etc/slurm/slurm.conf",
        "LANG": "C.UTF-8",
    }
