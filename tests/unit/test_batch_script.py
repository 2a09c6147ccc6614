"""The rendered batch script: recorded expectations, bash -n, shellcheck, and running it locally."""

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

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
}


@pytest.mark.parametrize("name", sorted(REPRESENTATIVE_JOBS))
def test_rendered_script_matches_the_recorded_one(name: str) -> None:
    expected = (RENDERED / f"{name}.sh").read_text()
    assert render_batch_script(REPRESENTATIVE_JOBS[name]) == expected


@pytest.mark.parametrize("name", sorted(REPRESENTATIVE_JOBS))
def test_rendered_script_passes_bash_n_and_shellcheck(name: str, tmp_path: Path) -> None:
    path = tmp_path / "job.sh"
    path.write_text(render_batch_script(REPRESENTATIVE_JOBS[name]))
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


def test_optional_directives_are_left_out() -> None:
    directives = directive_region(render_batch_script(make_job()))
    assert not [
        d
        for d in directives
        if d.split("=")[0]
        in ("#SBATCH --qos", "#SBATCH --gres", "#SBATCH --mem", "#SBATCH --constraint", "#SBATCH --array")
    ]
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


def run_locally(job: BatchJob, cwd: Path) -> bytes:
    """Run the rendered script with bash here (the #SBATCH lines are comments to bash)."""
    path = cwd / "job.sh"
    path.write_text(render_batch_script(job))
    result = subprocess.run(
        ["bash", str(path)],
        cwd=cwd,
        capture_output=True,
        check=False,
        timeout=30,
        env={"PATH": "/usr/bin:/bin"},
    )
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
    assert render_batch_script(job).endswith("set +euo pipefail\n" + body)
    assert run_locally(job, tmp_path) == b"unset=[]\nstatus=0 data=a b\n"


def test_command_runtime_stops_at_the_programs_exit_status(tmp_path: Path) -> None:
    path = tmp_path / "job.sh"
    path.write_text(render_batch_script(make_job(command=("sh", "-c", "exit 7"))))
    assert subprocess.run(["bash", str(path)], check=False).returncode == 7


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


def test_render_rejects_invalid_jobs_naming_the_field() -> None:
    with pytest.raises(JobSpecError) as excinfo:
        render_batch_script(make_job(constraints=("ib", "h100\n#SBATCH --uid=0")))
    assert excinfo.value.field == "constraints[1]"


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
