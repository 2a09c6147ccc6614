"""Runtime fields of the JobSpec: decoding, admission, the BatchJob runtime they become."""

from __future__ import annotations

import json

import pytest

from gateway.job_admission import TenantPolicy, admit_job
from gateway.job_schemas import decode_job_spec
from slurm.batch_job import BatchJob, JuliaRuntime, MpiRuntime, RayRuntime, ScriptRuntime, TorchrunRuntime
from slurm.errors import JobSpecError

POLICY = TenantPolicy(allowed_partitions=("gpu", "cpu"), allowed_qos=("normal",), default_qos="normal")


def batch_job(**fields: object) -> BatchJob:
    body = {"name": "train", "command": ["prog"], "nodes": 2, **fields}
    _, job = admit_job(
        decode_job_spec(json.dumps(body).encode()),
        POLICY,
        gateway_job_id="job-1",
        unix_user="alice",
        account="acct",
        working_dir="/var/lib/slurm-gateway/jobs/t1/job-1",
    )
    return job


def test_script_stays_the_default_runtime() -> None:
    assert batch_job().runtime == ScriptRuntime()
    assert batch_job(runtime="script", command=None, script="echo hi").runtime == ScriptRuntime()


@pytest.mark.parametrize(
    ("fields", "runtime"),
    [
        ({"runtime": "mpi"}, MpiRuntime()),
        ({"runtime": "mpi", "mpi": {"launcher": "mpirun"}}, MpiRuntime(launcher="mpirun")),
        ({"runtime": "ray", "ray": {"object_store_mb": 100}}, RayRuntime(object_store_mb=100)),
        (
            {"runtime": "julia", "julia": {"project": "/shared/proj", "worker_timeout_s": 600}},
            JuliaRuntime(project="/shared/proj", worker_timeout_s=600),
        ),
        ({"runtime": "torchrun", "torchrun": {"nproc_per_node": 2}}, TorchrunRuntime(nproc_per_node=2)),
    ],
)
def test_runtime_options_become_the_batch_jobs_runtime(fields: dict[str, object], runtime: object) -> None:
    assert batch_job(**fields).runtime == runtime


def test_placement_fields_are_mapped() -> None:
    job = batch_job(exclusive=True, switches=1, switches_wait="1:30:00")
    assert (job.exclusive, job.switches, job.switches_wait_minutes) == (True, 1, 90)
    assert batch_job().switches is None


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"runtime": "fortran"}, "runtime"),
        ({"runtime": "mpi", "mpi": {"launcher": "hydra"}}, "mpi.launcher"),
        ({"runtime": "mpi", "mpi": {"colour": "red"}}, "mpi.colour"),
        ({"runtime": "ray", "ray": {"python": "python3; touch CANARY"}}, "ray.python"),
        ({"runtime": "ray", "ray": {"object_store_mb": 1}}, "ray.object_store_mb"),
        ({"runtime": "ray", "memory": "1G", "ray": {"object_store_mb": 4096}}, "ray.object_store_mb"),
        ({"runtime": "julia", "julia": {"depot_path": "relative"}}, "julia.depot_path"),
        ({"runtime": "julia", "julia": {"project": "/a/../b"}}, "julia.project"),
        ({"runtime": "torchrun", "torchrun": {"nproc_per_node": 0}}, "torchrun.nproc_per_node"),
        ({"runtime": "mpi", "ray": {}}, "ray"),
        ({"ray": {}}, "ray"),
        ({"runtime": "torchrun", "command": None, "script": "torchrun x.py"}, "command"),
        ({"runtime": "mpi", "command": ["-x"]}, "command[0]"),
        ({"switches": 0}, "switches"),
        ({"switches_wait": "5"}, "switches_wait"),
        ({"switches": 1, "switches_wait": "soon"}, "switches_wait"),
        ({"exclusive": "yes"}, "exclusive"),
    ],
)
def test_bad_runtime_fields_are_refused_naming_the_field(fields: dict[str, object], field: str) -> None:
    with pytest.raises(JobSpecError) as caught:
        batch_job(**fields)
    assert caught.value.field == field
