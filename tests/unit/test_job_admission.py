"""Admission: JobSpec decoding, tenant policy, defaults and the BatchJob a spec becomes."""

from __future__ import annotations

import json

import msgspec
import pytest

from gateway.job_admission import (
    DEFAULT_TIME_LIMIT,
    TenantPolicy,
    admit_job,
    admit_job_spec,
    batch_job_from_spec,
    job_working_dir,
    memory_mb,
)
from gateway.job_schemas import JobSpec, decode_job_spec
from gateway.job_service import stale_limit
from slurm.errors import JobSpecError

POLICY = TenantPolicy(allowed_partitions=("cpu", "gpu"), allowed_qos=("normal", "high"), default_qos="normal")


def spec(**fields: object) -> JobSpec:
    return decode_job_spec(json.dumps({"name": "train", "command": ["true"], **fields}).encode())


def admit(**fields: object) -> JobSpec:
    admitted, _ = admit_job(
        spec(**fields),
        POLICY,
        gateway_job_id="job-1",
        unix_user="alice",
        account="acct",
        working_dir="/var/lib/slurm-gateway/jobs/t1/job-1",
    )
    return admitted


def field_of(body: dict[str, object]) -> str:
    with pytest.raises(JobSpecError) as caught:
        decode_job_spec(json.dumps(body).encode())
    return caught.value.field


# --- decoding -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "a", "command": ["x"], "colour": "red"}, "colour"),
        ({"command": ["x"]}, "name"),
        ({"name": "a", "nodes": 0}, "nodes"),
        ({"name": "a", "nodes": -1}, "nodes"),
        ({"name": "a", "nodes": 10**9}, "nodes"),
        ({"name": "a", "nodes": "2"}, "nodes"),
        ({"name": "a", "nodes": 1.5}, "nodes"),
        ({"name": "a", "gpus_per_node": 65}, "gpus_per_node"),
        ({"name": "a", "cpus_per_task": 0}, "cpus_per_task"),
        ({"name": "a b"}, "name"),
        ({"name": "a\nb"}, "name"),
        ({"name": "a", "command": ["x", 3]}, "command[1]"),
        ({"name": "a", "command": []}, "command"),
        ({"name": "a", "env": {"A": 1}}, "env"),
        ({"name": "a", "labels": {"Bad Key": "v"}}, "labels"),
        ({"name": "a", "labels": {"team": "a b"}}, "labels"),
        ({"name": "a", "labels": {f"k{i}": "v" for i in range(33)}}, "labels"),
        ({"name": "a", "constraints": ["ib;rm"]}, "constraints[0]"),
        ({"name": "a", "partition": "cpu\n#SBATCH --uid=0"}, "partition"),
    ],
)
def test_structurally_bad_specs_name_the_field(body: dict[str, object], field: str) -> None:
    assert field_of(body) == field


def test_non_json_and_non_object_bodies_are_refused_as_body() -> None:
    for raw in (b"{not json", b"[]", b'"text"'):
        with pytest.raises(JobSpecError) as caught:
            decode_job_spec(raw)
        assert caught.value.field == "body"


# --- policy and defaults ----------------------------------------------------------


def test_defaults_come_from_the_tenant_policy() -> None:
    admitted = admit()
    assert admitted.partition == "cpu"
    assert admitted.qos == "normal"
    assert admitted.time_limit == DEFAULT_TIME_LIMIT


def test_explicit_choices_within_policy_are_kept() -> None:
    admitted = admit(partition="gpu", qos="high", time_limit="1-00:00:00")
    assert (admitted.partition, admitted.qos, admitted.time_limit) == ("gpu", "high", "1-00:00:00")


@pytest.mark.parametrize(
    ("fields", "field", "hint"),
    [
        ({"partition": "debug"}, "partition", "allowed: cpu, gpu"),
        ({"qos": "urgent"}, "qos", "allowed: normal, high"),
        ({"runtime": "mpi", "command": None, "script": "echo hi"}, "command", "runs a command"),
        ({"runtime": "fortran"}, "runtime", "unknown runtime"),
        ({"script": "echo hi"}, "command", "exactly one"),
        ({"gpu_type": "h100"}, "gpu_type", "gpus_per_node"),
        ({"memory": "lots"}, "memory", "memory size"),
        ({"time_limit": "soon"}, "time_limit", "not a Slurm time limit"),
        ({"time_limit": "UNLIMITED"}, "time_limit", "finite"),
        ({"time_limit": "0"}, "time_limit", "at least one minute"),
        ({"env": {"LD_PRELOAD": "/x.so"}}, "env", ""),
        ({"env": {"A-B": "x"}}, "env", ""),
        ({"env": {"OK": "a\nb"}}, "env.OK", "control character"),
        ({"array": "0-9999999"}, "array", ""),
        ({"array": "x"}, "array", ""),
        ({"command": ["echo", "a\x00b"]}, "command[1]", "control character"),
    ],
)
def test_policy_and_syntax_refusals_name_the_field(fields: dict[str, object], field: str, hint: str) -> None:
    with pytest.raises(JobSpecError) as caught:
        admit(**fields)
    assert caught.value.field.startswith(field)
    assert hint in caught.value.message


def test_a_tenant_without_partitions_cannot_submit() -> None:
    with pytest.raises(JobSpecError) as caught:
        admit_job_spec(spec(), TenantPolicy(allowed_partitions=(), allowed_qos=()))
    assert caught.value.field == "partition"


def test_no_default_qos_means_no_qos() -> None:
    admitted = admit_job_spec(spec(), TenantPolicy(allowed_partitions=("cpu",), allowed_qos=()))
    assert admitted.qos is None


@pytest.mark.parametrize(
    ("text", "minutes"),
    [("30", 30), ("5:30", 6), ("1:00:00", 60), ("2-12", 3600), ("1-02:03", 1563), ("1-00:00:01", 1441)],
)
def test_every_slurm_time_limit_format_becomes_minutes(text: str, minutes: int) -> None:
    admitted = admit(time_limit=text)
    job = batch_job_from_spec(
        admitted, gateway_job_id="j", unix_user="alice", account="a", working_dir="/var/x"
    )
    assert job.time_limit_minutes == minutes


@pytest.mark.parametrize(
    ("text", "megabytes"),
    [("4G", 4096), ("500M", 500), ("4000", 4000), ("512K", 1), ("1T", 1048576), ("2gb", 2048)],
)
def test_memory_sizes_become_megabytes_per_node(text: str, megabytes: int) -> None:
    assert memory_mb(text) == megabytes


@pytest.mark.parametrize("text", ["0", "0M", "-1G", "4X", "G", "1.5G", "99999999999T"])
def test_bad_memory_sizes_are_refused(text: str) -> None:
    with pytest.raises(JobSpecError) as caught:
        memory_mb(text)
    assert caught.value.field == "memory"


def test_the_batch_job_carries_every_admitted_field() -> None:
    admitted = admit(
        partition="gpu",
        nodes=2,
        tasks_per_node=4,
        cpus_per_task=2,
        gpus_per_node=4,
        gpu_type="h100",
        memory="4G",
        constraints=["ib"],
        env={"OMP_NUM_THREADS": "4"},
        array="0-3%2",
        labels={"team": "ml"},
    )
    job = batch_job_from_spec(
        admitted, gateway_job_id="job-9", unix_user="alice", account="acct", working_dir="/var/lib/x/job-9"
    )
    assert job.comment == "sgw:job-9"
    assert (job.nodes, job.tasks_per_node, job.cpus_per_task, job.gpus_per_node) == (2, 4, 2, 4)
    assert (job.gpu_type, job.memory_mb_per_node, job.constraints) == ("h100", 4096, ("ib",))
    assert (job.command, job.script, job.qos, job.array) == (("true",), None, "normal", "0-3%2")
    assert job.env == {"OMP_NUM_THREADS": "4"}


def test_the_admitted_spec_round_trips_through_json_storage() -> None:
    admitted = admit(labels={"team": "ml"}, env={"A": "1"})
    stored = json.loads(json.dumps(msgspec.to_builtins(admitted)))
    assert msgspec.convert(stored, JobSpec) == admitted


def test_working_dirs_live_under_the_job_root_per_tenant() -> None:
    assert job_working_dir("/var/lib/sgw/jobs", "t1", "job-1") == "/var/lib/sgw/jobs/t1/job-1"


# --- heartbeat, signal and hang limit ------------------------------------------------


def test_heartbeat_and_signal_reach_the_batch_job() -> None:
    admitted = admit(heartbeat={"source": "program", "stale_after_s": 30}, signal_before_limit_s=120)
    batch = batch_job_from_spec(
        admitted,
        gateway_job_id="job-1",
        unix_user="alice",
        account="acct",
        working_dir="/w",
        step_name="train",
        dependencies=("41", "42"),
    )
    assert (batch.heartbeat, batch.signal_before_limit_s) == ("program", 120)
    assert (batch.step_name, batch.dependencies) == ("train", ("41", "42"))
    assert batch_job_from_spec(
        admit(), gateway_job_id="j", unix_user="u", account="a", working_dir="/w"
    ).heartbeat == ("wrapper")


@pytest.mark.parametrize(
    ("heartbeat", "limit"),
    [
        (None, 10),
        ({"source": "wrapper"}, 10),
        ({"stale_after_s": 42}, 42),
        ({"source": "off", "stale_after_s": 42}, None),
    ],
)
def test_the_hang_limit_comes_from_the_spec_or_the_gateway_default(
    heartbeat: dict[str, object] | None, limit: int | None
) -> None:
    assert stale_limit(admit(**({"heartbeat": heartbeat} if heartbeat else {})), 10) == limit


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"signal_before_limit_s": 5}, "signal_before_limit_s"),
        ({"heartbeat": {"stale_after_s": 1}}, "heartbeat.stale_after_s"),
        ({"heartbeat": {"source": "sometimes"}}, "heartbeat.source"),
    ],
)
def test_bad_heartbeat_and_signal_settings_name_the_field(fields: dict[str, object], field: str) -> None:
    assert field_of({"name": "a", "command": ["x"], **fields}) == field
