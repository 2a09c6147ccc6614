"""Shell and #SBATCH injection attempts against the real cluster.

Payloads the validators accept (command arguments, env values) are rendered, submitted with the
gateway's own sbatch argv as alice, and must arrive byte for byte without running anything;
payloads aimed at #SBATCH values must be rejected before anything reaches Slurm. A script body
is the user's own code by design, so it is only checked for the one property that matters: its
#SBATCH lines are ignored.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import msgspec
import pytest

from slurm.batch_job import BatchJob, JuliaRuntime, MpiRuntime, RayRuntime, TorchrunRuntime
from slurm.batch_script import build_sbatch_argv, render_batch_script, sbatch_environment
from slurm.errors import JobSpecError
from tests.integration.slurm_cluster import SHARED_TEST_ROOT, ensure_account, wait_for_state

pytestmark = [pytest.mark.integration, pytest.mark.slurm]

ACCOUNT = "sgw_inj"
USER = "alice"
CANARY_NAME = "CANARY"


def accepted_payloads(canary: Path) -> list[str]:
    """Injection attempts that are legitimate argument and env text: they must stay literal."""
    return [
        f"$(touch {canary})",
        f"`touch {canary}`",
        f"; touch {canary}",
        f"&& touch {canary}",
        f"|| touch {canary}",
        f"| touch {canary}",
        f"& touch {canary} &",
        f"'; touch {canary}; '",
        f'"; touch {canary}; "',
        f'"$(touch {canary})"',
        f"'$(touch {canary})'",
        f"\\'$(touch {canary})\\'",
        f"<(touch {canary})",
        f"> {canary}",
        f"$'\\x3b' touch {canary}",
        f"${{IFS}}touch${{IFS}}{canary}",
        "$IFS$HOME${PATH}$0$1$@$*$$$!",
        "\\",
        "\\\\n",
        "'",
        '"',
        "#SBATCH --uid=0",
        "#SBATCH --account=root",
        "#PBS -A root",
        "* ? [a-z] ** ~ ~root {a,b} !!",
        "-n",
        "--",
        "-",
        "%j %A %u",
        "",
        "   ",
        " leading and trailing ",
        "unicode ✓ 日本語 \u200b\u202e \U0001f600",
        "x" * 30_000,
    ]


# Newlines and tabs are allowed in arguments (not in env values).
ARGUMENT_ONLY_PAYLOADS = [
    "x\n#SBATCH --uid=0",
    "\n#SBATCH --account=root\n",
    "line1\nline2",
    "tab\there",
    "\n",
]


class SubmittedJobs(NamedTuple):
    workdir: Path
    canary: Path
    argv_payloads: list[str]
    env_payloads: dict[str, str]
    ids: dict[str, str]
    records: dict[str, dict[str, str]]


def make_job(workdir: Path, **changes: Any) -> BatchJob:
    fields: dict[str, Any] = {
        "gateway_job_id": f"inj-{uuid.uuid4().hex[:12]}",
        "name": "sgw_inj",
        "unix_user": USER,
        "account": ACCOUNT,
        "partition": "cpu",
        "working_dir": str(workdir),
        "time_limit_minutes": 2,
        "command": ("true",),
    }
    fields.update(changes)
    return BatchJob(**fields)


def submit(job: BatchJob, environment: Mapping[str, str]) -> str:
    """Submit exactly as the CLI driver does: the gateway's argv, the script on stdin."""
    result = subprocess.run(
        build_sbatch_argv(job),
        input=render_batch_script(job),
        env=dict(environment),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().split(";")[0]


@pytest.fixture(scope="module")
def submitted() -> Iterator[SubmittedJobs]:
    """All corpus jobs, submitted together and waited for once (a few seconds in all)."""
    ensure_account(ACCOUNT, [USER])
    workdir = SHARED_TEST_ROOT / f"sgw_inj_{uuid.uuid4().hex[:12]}"
    workdir.mkdir(parents=True)
    SHARED_TEST_ROOT.chmod(0o755)
    shutil.chown(workdir, USER, USER)
    canary = workdir / CANARY_NAME
    argv_payloads = accepted_payloads(canary) + ARGUMENT_ONLY_PAYLOADS
    env_payloads = {f"P{index}": payload for index, payload in enumerate(accepted_payloads(canary))}
    reader = "import os,sys; sys.stdout.write('\\0'.join(os.environ.get(k, '<unset>') for k in sys.argv[1:]))"
    clean = sbatch_environment(os.environ)
    jobs = {
        "argv": (make_job(workdir, command=("printf", "%s\\0", *argv_payloads)), clean),
        # The same argv through a runtime's launch line (srun --mpi=pmix ... <argv>).
        "mpi_argv": (
            make_job(workdir, runtime=MpiRuntime(), command=("printf", "%s\\0", *argv_payloads)),
            clean,
        ),
        # --export=NONE: what is in sbatch's environment must never reach the job; read in an
        # srun step, which must still get the job's own env (SLURM_EXPORT_ENV=ALL).
        "env": (
            make_job(
                workdir,
                env=env_payloads,
                command=(
                    "srun",
                    "python3",
                    "-c",
                    reader,
                    *env_payloads,
                    "SGW_INJ_SECRET",
                    "SLURM_EXPORT_ENV",
                ),
            ),
            {**clean, "SGW_INJ_SECRET": "leaked"},
        ),
        "script": (
            make_job(
                workdir,
                name="sgw_inj_script",
                command=None,
                script=(
                    "#SBATCH --job-name=pwned\n#SBATCH --uid=0\n#SBATCH --account=root\n"
                    'printf "%s|%s|%s\\n" "$(id -un)" "$SLURM_JOB_NAME" "$SLURM_JOB_ACCOUNT"\n'
                ),
            ),
            clean,
        ),
        "directives": (
            make_job(
                workdir,
                name="sgw_inj_gpu",
                partition="gpu",
                qos="normal",
                gpus_per_node=1,
                gpu_type="h100",
                memory_mb_per_node=500,
                constraints=("ib", "h100"),
                command=("hostname",),
            ),
            clean,
        ),
    }
    # The jobs share one working directory, so each is a step of its own (as the steps of one
    # gateway job are): attempts of one step never run side by side.
    ids = {
        key: submit(msgspec.structs.replace(job, step_name=key), environment)
        for key, (job, environment) in jobs.items()
    }
    records = {key: wait_for_state(job_id, timeout=90) for key, job_id in ids.items()}
    yield SubmittedJobs(workdir, canary, argv_payloads, env_payloads, ids, records)
    shutil.rmtree(workdir, ignore_errors=True)


def output_of(jobs: SubmittedJobs, key: str) -> bytes:
    assert (jobs.workdir / f"slurm-{jobs.ids[key]}.err").read_bytes() == b""
    return (jobs.workdir / f"slurm-{jobs.ids[key]}.out").read_bytes()


def test_every_job_completed_as_alice_under_its_account(submitted: SubmittedJobs) -> None:
    for key, record in submitted.records.items():
        assert (key, record["State"], record["User"], record["Account"]) == (key, "COMPLETED", USER, ACCOUNT)


def test_command_arguments_arrive_byte_for_byte(submitted: SubmittedJobs) -> None:
    output = output_of(submitted, "argv")
    assert output.split(b"\0")[:-1] == [payload.encode() for payload in submitted.argv_payloads]


def test_env_values_reach_steps_byte_for_byte_and_the_gateway_env_stays_out(submitted: SubmittedJobs) -> None:
    values = output_of(submitted, "env").decode().split("\0")
    assert values == [*submitted.env_payloads.values(), "<unset>", "ALL"]


def test_runtime_command_arguments_arrive_byte_for_byte(submitted: SubmittedJobs) -> None:
    output = output_of(submitted, "mpi_argv")
    assert output.split(b"\0")[:-1] == [payload.encode() for payload in submitted.argv_payloads]


def test_no_payload_ran(submitted: SubmittedJobs) -> None:
    assert not list(submitted.workdir.rglob(f"*{CANARY_NAME}*"))
    assert not submitted.canary.exists()


def test_every_step_published_its_outputs(submitted: SubmittedJobs) -> None:
    assert sorted(path.name for path in (submitted.workdir / "outputs").iterdir()) == sorted(submitted.ids)


def test_directives_in_a_script_body_are_ignored(submitted: SubmittedJobs) -> None:
    # Read from inside the job: right after a job ends, sacct can still show the placeholder
    # JobName "allocation" for a few seconds.
    assert output_of(submitted, "script") == f"{USER}|sgw_inj_script|{ACCOUNT}\n".encode()


def test_rendered_gpu_directives_are_what_slurm_allocates(submitted: SubmittedJobs) -> None:
    record = submitted.records["directives"]
    assert "gres/gpu=1" in record["AllocTRES"]
    assert record["NodeList"].startswith("gpu")
    assert output_of(submitted, "directives").decode().strip() == record["NodeList"]


def sbatch_test_only(job: BatchJob, environment: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """sbatch --test-only: Slurm checks the submission without queueing it."""
    return subprocess.run(
        [*build_sbatch_argv(job), "--test-only"],
        input=render_batch_script(job),
        env=dict(environment),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_rendered_array_directive_is_accepted_by_sbatch() -> None:
    ensure_account(ACCOUNT, [USER])
    result = sbatch_test_only(make_job(SHARED_TEST_ROOT, array="0-15:4%2"), sbatch_environment(os.environ))
    assert result.returncode == 0, result.stderr
    assert "to start at" in result.stderr


def test_rendered_signal_directive_is_accepted_by_sbatch() -> None:
    ensure_account(ACCOUNT, [USER])
    job = make_job(SHARED_TEST_ROOT, signal_before_limit_s=60, time_limit_minutes=5)
    result = sbatch_test_only(job, sbatch_environment(os.environ))
    assert result.returncode == 0, result.stderr


def test_sbatch_environment_keeps_sbatch_variables_from_overriding_directives() -> None:
    # SBATCH_* input variables beat #SBATCH lines, so sbatch must never see the caller's.
    ensure_account(ACCOUNT, [USER])
    dirty = {**os.environ, "SBATCH_ACCOUNT": "root"}
    job = make_job(SHARED_TEST_ROOT)
    assert "Invalid account" in sbatch_test_only(job, dirty).stderr
    assert sbatch_test_only(job, sbatch_environment(dirty)).returncode == 0


SBATCH_INJECTIONS = [
    "x\n#SBATCH --uid=0",
    "x\r#SBATCH --uid=0",
    "x\x00y",
    "x\t--uid=0",
    "x --uid=0",
    "x#--uid=0",
    "x'y",
    'x"y',
    "x\\y",
    "$(touch CANARY)",
    "`touch CANARY`",
    "x;y",
    "x\u2028y",
    "ü",
    "x" * 2000,
]


@pytest.mark.parametrize("payload", SBATCH_INJECTIONS, ids=range(len(SBATCH_INJECTIONS)))
@pytest.mark.parametrize(
    ("field", "changes"),
    [
        ("name", lambda p: {"name": p}),
        ("account", lambda p: {"account": p}),
        ("partition", lambda p: {"partition": p}),
        ("qos", lambda p: {"qos": p}),
        ("gpu_type", lambda p: {"gpus_per_node": 1, "gpu_type": p}),
        ("constraints[1]", lambda p: {"constraints": ("ib", p)}),
        ("array", lambda p: {"array": f"0-3{p}"}),
        ("working_dir", lambda p: {"working_dir": f"/var/tmp/{p}"}),
        ("gateway_job_id", lambda p: {"gateway_job_id": f"g{p}"}),
        ("unix_user", lambda p: {"unix_user": f"alice{p}"}),
        # The step names directories and links in the working directory; dependencies are ids.
        ("step_name", lambda p: {"step_name": f"s{p}"}),
        ("dependencies[1]", lambda p: {"dependencies": ("1", f"2{p}")}),
    ],
)
def test_directive_injections_are_rejected_naming_the_field(field: str, changes: Any, payload: str) -> None:
    job = make_job(SHARED_TEST_ROOT, **changes(payload))
    for render in (render_batch_script, build_sbatch_argv):
        with pytest.raises(JobSpecError) as excinfo:
            render(job)
        assert excinfo.value.field == field


@pytest.mark.parametrize("payload", SBATCH_INJECTIONS, ids=range(len(SBATCH_INJECTIONS)))
@pytest.mark.parametrize(
    ("field", "changes"),
    [
        ("ray.python", lambda p: {"runtime": RayRuntime(python=f"python3{p}")}),
        ("torchrun.python", lambda p: {"runtime": TorchrunRuntime(python=f"python3{p}")}),
        ("julia.julia", lambda p: {"runtime": JuliaRuntime(julia=f"julia{p}")}),
        ("julia.project", lambda p: {"runtime": JuliaRuntime(project=f"/var/tmp/{p}")}),
        ("julia.depot_path", lambda p: {"runtime": JuliaRuntime(depot_path=f"/var/tmp/{p}")}),
    ],
)
def test_runtime_option_injections_are_rejected_naming_the_field(
    field: str, changes: Any, payload: str
) -> None:
    job = make_job(SHARED_TEST_ROOT, **changes(payload))
    with pytest.raises(JobSpecError) as excinfo:
        render_batch_script(job)
    assert excinfo.value.field == field


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"runtime": MpiRuntime(), "command": ("-n", "touch CANARY")}, "command[0]"),
        ({"runtime": MpiRuntime(), "command": None, "script": "touch CANARY"}, "command"),
        ({"command": ("echo", "a\x00b")}, "command[1]"),
        ({"command": ("echo", "a\r\n#SBATCH --uid=0")}, "command[1]"),
        ({"command": ("echo", "\x1b]0;title\x07")}, "command[1]"),
        ({"env": {"X": "a\nexport LD_PRELOAD=/x.so"}}, "env.X"),
        ({"env": {"X": "a\rb"}}, "env.X"),
        ({"env": {"X": "a\x00b"}}, "env.X"),
        ({"env": {"X": "a\tb"}}, "env.X"),
        ({"env": {"X=1;touch CANARY;Y": "v"}}, "env"),
        ({"env": {"$(touch CANARY)": "v"}}, "env"),
        ({"env": {"A\n#SBATCH --uid=0": "v"}}, "env"),
        ({"env": {"LD_PRELOAD": "/tmp/x.so"}}, "env.LD_PRELOAD"),
        ({"env": {"BASH_ENV": "/tmp/x.sh"}}, "env.BASH_ENV"),
        ({"env": {"SBATCH_ACCOUNT": "root"}}, "env.SBATCH_ACCOUNT"),
        ({"env": {"SGW_OUTPUT_DIR": "/etc"}}, "env.SGW_OUTPUT_DIR"),
        ({"step_name": "../../etc"}, "step_name"),
        ({"step_name": ".."}, "step_name"),
        ({"dependencies": ("1;touch CANARY",)}, "dependencies[0]"),
        ({"dependencies": ("1", "$(touch CANARY)")}, "dependencies[1]"),
        ({"command": None, "script": "echo hi\x00"}, "script"),
    ],
)
def test_shell_injections_that_validation_refuses(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(JobSpecError) as excinfo:
        render_batch_script(make_job(SHARED_TEST_ROOT, **changes))
    assert excinfo.value.field == field
