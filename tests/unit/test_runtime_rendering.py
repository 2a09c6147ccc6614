"""Runtime renderers (mpi, ray, julia, torchrun): recorded scripts, bash -n, shellcheck, the watchdog.

Julia cannot be installed on the dev machine (no registry ships it), so its renderer is tested
here only: as text against the recorded script and with bash -n and shellcheck.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from slurm import rest_v0038
from slurm.batch_job import (
    BatchJob,
    JuliaRuntime,
    MpiRuntime,
    PartitionFabric,
    RayRuntime,
    TorchrunRuntime,
)
from slurm.batch_script import render_batch_script
from slurm.errors import JobSpecError
from slurm.partition_fabrics import PartitionFabrics
from slurm.runtimes.background_steps import WATCHDOG_LINES
from slurm.runtimes.node_network import JOB_PORT_BLOCK, job_port_base_lines
from slurm.runtimes.ray import object_store_mb
from slurm.runtimes.torchrun import torchrun_nproc_per_node

RENDERED = Path(__file__).parent / "fixtures" / "rendered"
SHELLCHECK_EXCLUDES = "SC2016,SC1003"
LOOPBACK = PartitionFabric(
    interface="lo",
    nccl_socket_ifname="lo",
    env={
        "OMPI_MCA_btl": "self,tcp",
        "OMPI_MCA_btl_tcp_if_include": "lo",
        "OMPI_MCA_oob_tcp_if_include": "lo",
    },
)
INFINIBAND = PartitionFabric(
    interface="ib0", ucx_net_devices="mlx5_0:1", nccl_ib_hca="=mlx5_0", nccl_socket_ifname="ib0"
)


def make_job(**changes: Any) -> BatchJob:
    fields: dict[str, Any] = {
        "gateway_job_id": "01J0RUNTIME",
        "name": "train",
        "unix_user": "alice",
        "account": "physics",
        "partition": "gpu",
        "working_dir": "/var/lib/slurm-gateway/jobs/01J0RUNTIME",
        "time_limit_minutes": 30,
        "nodes": 2,
        "tasks_per_node": 2,
        "cpus_per_task": 2,
        "gpus_per_node": 4,
        "gpu_type": "h100",
        "memory_mb_per_node": 3000,
        "fabric": LOOPBACK,
        "command": ("./allreduce", "--size", "1 MiB"),
        "runtime": MpiRuntime(),
    }
    fields.update(changes)
    return BatchJob(**fields)


RUNTIME_JOBS = {
    "mpi_srun": make_job(runtime=MpiRuntime(gpu_bind="closest"), fabric=INFINIBAND),
    "mpi_mpirun": make_job(runtime=MpiRuntime(launcher="mpirun"), exclusive=True, switches=1),
    "ray": make_job(
        runtime=RayRuntime(),
        command=("python3", "driver.py", "--it's", "$(literal)"),
        env={"PYTHONPATH": "/opt/x"},
    ),
    "julia": make_job(
        runtime=JuliaRuntime(julia="/opt/julia/bin/julia", depot_path="/shared/depot"),
        command=("main.jl", "--steps", "10"),
        switches=1,
        switches_wait_minutes=10,
    ),
    "torchrun": make_job(runtime=TorchrunRuntime(), command=("train.py", "--lr", "0.1"), exclusive=True),
}


@pytest.mark.parametrize("name", sorted(RUNTIME_JOBS))
def test_rendered_runtime_script_matches_the_recorded_one(name: str) -> None:
    expected = (RENDERED / f"runtime_{name}.sh").read_text()
    assert render_batch_script(RUNTIME_JOBS[name]) == expected


def shellcheck(script: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "job.sh"
    path.write_text(script)
    subprocess.run(["bash", "-n", str(path)], check=True, capture_output=True)
    assert shutil.which("shellcheck"), "shellcheck is missing: `make test` installs it"
    return subprocess.run(
        ["shellcheck", "--shell=bash", f"--exclude={SHELLCHECK_EXCLUDES}", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize("name", sorted(RUNTIME_JOBS))
def test_rendered_runtime_script_passes_bash_n_and_shellcheck(name: str, tmp_path: Path) -> None:
    result = shellcheck(render_batch_script(RUNTIME_JOBS[name]), tmp_path)
    assert result.returncode == 0, result.stdout


def directive_region(script: str) -> list[str]:
    """The #SBATCH lines sbatch reads: those before the first non-blank, non-comment line."""
    directives = []
    for line in script.splitlines():
        if line.strip() and not line.startswith("#"):
            break
        if line.startswith("#SBATCH"):
            directives.append(line)
    return directives


PAYLOADS = ["$(touch CANARY)", "`touch CANARY`", "'; touch CANARY; '", "x\n#SBATCH --uid=0", "-n", "\\", ""]


@pytest.mark.parametrize("runtime", [MpiRuntime(), RayRuntime(), JuliaRuntime(), TorchrunRuntime()])
def test_hostile_arguments_stay_quoted_for_every_runtime(runtime: Any, tmp_path: Path) -> None:
    job = make_job(runtime=runtime, command=("prog", *PAYLOADS), env={"X": "$(touch CANARY)"})
    script = render_batch_script(job)
    assert directive_region(script) == directive_region(render_batch_script(make_job(runtime=runtime)))
    result = shellcheck(script, tmp_path)
    assert result.returncode == 0, result.stdout


RUNTIME_FIELD_INJECTIONS = [
    ({"runtime": RayRuntime(python="python3; touch CANARY")}, "ray.python"),
    ({"runtime": RayRuntime(python="$(touch CANARY)")}, "ray.python"),
    ({"runtime": RayRuntime(python="-c")}, "ray.python"),
    ({"runtime": RayRuntime(python="py\nthon")}, "ray.python"),
    ({"runtime": RayRuntime(object_store_mb=3000)}, "ray.object_store_mb"),
    ({"runtime": RayRuntime(object_store_mb=10)}, "ray.object_store_mb"),
    ({"runtime": RayRuntime(join_timeout_s=0)}, "ray.join_timeout_s"),
    ({"runtime": TorchrunRuntime(python="py thon")}, "torchrun.python"),
    ({"runtime": TorchrunRuntime(nproc_per_node=0)}, "torchrun.nproc_per_node"),
    ({"runtime": JuliaRuntime(julia="`touch CANARY`")}, "julia.julia"),
    ({"runtime": JuliaRuntime(project="relative/dir")}, "julia.project"),
    ({"runtime": JuliaRuntime(project="/a/../etc")}, "julia.project"),
    ({"runtime": JuliaRuntime(depot_path="/x\n#SBATCH --uid=0")}, "julia.depot_path"),
    ({"runtime": JuliaRuntime(depot_path="/x'y")}, "julia.depot_path"),
    ({"runtime": JuliaRuntime(worker_timeout_s=10**9)}, "julia.worker_timeout_s"),
    ({"runtime": MpiRuntime(), "command": ("--version",)}, "command[0]"),
    ({"runtime": MpiRuntime(), "command": None, "script": "mpirun ./a"}, "command"),
    ({"switches": 0}, "switches"),
    ({"switches_wait_minutes": 5}, "switches_wait"),
    ({"switches": 1, "switches_wait_minutes": 0}, "switches_wait"),
    ({"fabric": PartitionFabric(interface="lo; touch CANARY")}, "fabric.interface"),
    ({"fabric": PartitionFabric(ucx_net_devices="mlx5_0 $(x)")}, "fabric.ucx_net_devices"),
    ({"fabric": PartitionFabric(env={"LD_PRELOAD": "/x.so"})}, "fabric.env"),
    ({"fabric": PartitionFabric(env={"A;B": "x"})}, "fabric.env"),
    ({"fabric": PartitionFabric(env={"OMPI_MCA_btl": "tcp\nexport X=1"})}, "fabric.env.OMPI_MCA_btl"),
    ({"runtime": RayRuntime(), "signal_before_limit_s": 60}, "signal_before_limit_s"),
    ({"runtime": JuliaRuntime(), "signal_before_limit_s": 60}, "signal_before_limit_s"),
]


@pytest.mark.parametrize(("changes", "field"), RUNTIME_FIELD_INJECTIONS)
def test_unsafe_runtime_values_are_refused_naming_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(JobSpecError) as caught:
        render_batch_script(make_job(**changes))
    assert caught.value.field == field


def test_usr2_is_refused_for_runtimes_whose_program_is_a_watching_shell() -> None:
    with pytest.raises(JobSpecError, match="script, mpi and torchrun"):
        render_batch_script(make_job(runtime=RayRuntime(), signal_before_limit_s=60))


@pytest.mark.parametrize("runtime", [MpiRuntime(), MpiRuntime(launcher="mpirun"), TorchrunRuntime()])
def test_usr2_dependencies_and_arrays_pass_shellcheck_with_launchers(runtime: Any, tmp_path: Path) -> None:
    job = make_job(runtime=runtime, signal_before_limit_s=60, dependencies=("7",), array="0-1")
    script = render_batch_script(job)
    assert "trap 'kill -USR2 \"$sgw_child\" 2>/dev/null || true' USR2" in script
    result = shellcheck(script, tmp_path)
    assert result.returncode == 0, result.stdout


def test_runtime_lines_run_inside_the_wrapper_function() -> None:
    lines = render_batch_script(RUNTIME_JOBS["ray"]).splitlines()
    start, end = lines.index("sgw_main() {"), lines.index('sgw_main "$@" &')
    assert lines[end - 1] == "}"
    body = lines[start + 1 : end - 1]
    assert body[-1].startswith("sgw_run_watched python3 driver.py")
    assert "trap sgw_stop_launchers EXIT" in body


def test_mpi_passes_tasks_and_cpus_per_task_to_srun_explicitly() -> None:
    lines = render_batch_script(make_job()).splitlines()
    launch = lines[lines.index('sgw_main "$@" &') - 2]
    assert (
        launch
        == "exec srun --mpi=pmix --nodes=2 --ntasks-per-node=2 --cpus-per-task=2 ./allreduce --size '1 MiB'"
    )


def test_ray_counts_are_literal_and_the_store_stays_below_memory() -> None:
    script = render_batch_script(RUNTIME_JOBS["ray"])
    assert "--num-cpus=4 --num-gpus=4" in script
    assert "SLURM_GPUS_PER_TASK" not in script
    assert f"--object-store-memory={900 * 1024 * 1024}" in script
    assert object_store_mb(make_job(memory_mb_per_node=None), RayRuntime()) is None
    assert object_store_mb(make_job(), RayRuntime(object_store_mb=100)) == 100


def test_torchrun_runs_one_agent_per_node_with_one_process_per_gpu_or_task() -> None:
    assert torchrun_nproc_per_node(make_job(), TorchrunRuntime()) == 4
    assert torchrun_nproc_per_node(make_job(gpus_per_node=0, gpu_type=None), TorchrunRuntime()) == 2
    assert torchrun_nproc_per_node(make_job(), TorchrunRuntime(nproc_per_node=1)) == 1
    script = render_batch_script(RUNTIME_JOBS["torchrun"])
    assert "--ntasks-per-node=1" in script and '--rdzv-id="$SLURM_JOB_ID"' in script


@pytest.mark.parametrize("job_id", [1, 354, 355, 99_999_999])
def test_job_ports_stay_below_the_ephemeral_range(job_id: int) -> None:
    result = subprocess.run(
        ["bash", "-c", "\n".join([*job_port_base_lines(), 'echo "$sgw_port_base"'])],
        env={"SLURM_JOB_ID": str(job_id), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    base = int(result.stdout)
    assert base >= 10000 and base + JOB_PORT_BLOCK <= 32768


def run_watchdog(body: list[str]) -> tuple[subprocess.CompletedProcess[str], float]:
    script = "\n".join(["set -euo pipefail", *WATCHDOG_LINES, *body])
    started = time.monotonic()
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=False, timeout=30)
    return result, time.monotonic() - started


def test_the_watchdog_fails_fast_when_a_launcher_dies() -> None:
    result, elapsed = run_watchdog(
        [
            "sleep 30 & sgw_launchers+=($!)",
            "(sleep 0.3; exit 3) & sgw_launchers+=($!)",
            "sgw_run_watched sleep 20",
        ]
    )
    assert result.returncode == 1
    assert "exited early" in result.stderr
    assert elapsed < 5


def test_the_watchdog_returns_the_driver_status_and_stops_launchers() -> None:
    result, elapsed = run_watchdog(["sleep 30 & sgw_launchers+=($!)", "sgw_run_watched bash -c 'exit 7'"])
    assert result.returncode == 7
    assert elapsed < 5


def test_placement_directives() -> None:
    directives = [
        line for line in render_batch_script(RUNTIME_JOBS["julia"]).splitlines() if "--switches" in line
    ]
    assert directives == ["#SBATCH --switches=1@10"]
    exclusive = render_batch_script(RUNTIME_JOBS["torchrun"]).splitlines()
    assert exclusive[exclusive.index("#SBATCH --nodes=2") + 1] == "#SBATCH --exclusive"


def test_rest_submission_carries_exclusive_and_refuses_switches() -> None:
    exclusive = rest_v0038.submission_body(RUNTIME_JOBS["torchrun"], "")["job"]
    assert exclusive["exclusive"] == "exclusive"
    assert "exclusive" not in rest_v0038.submission_body(RUNTIME_JOBS["ray"], "")["job"]
    # Recorded on this cluster: slurmrestd 22.05 answers required_switches with "Operation not permitted".
    with pytest.raises(JobSpecError) as caught:
        rest_v0038.submission_body(RUNTIME_JOBS["julia"], "")
    assert caught.value.field == "switches"


def test_partition_fabrics_give_each_partition_its_settings() -> None:
    fabrics = PartitionFabrics({"gpu": INFINIBAND}, LOOPBACK)
    assert fabrics.apply(make_job(fabric=None)).fabric == INFINIBAND
    assert fabrics.apply(make_job(partition="cpu", fabric=None)).fabric == LOOPBACK
    assert PartitionFabrics({}, None).apply(make_job()).fabric is None
    with pytest.raises(JobSpecError) as caught:
        PartitionFabrics({"gpu": msgspec.structs.replace(INFINIBAND, nccl_ib_hca="x y")}, None)
    assert caught.value.field == "fabric.nccl_ib_hca"
