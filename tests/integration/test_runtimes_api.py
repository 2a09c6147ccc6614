"""Runtimes through the HTTP API on the real cluster: MPI, torchrun and Ray on 2 nodes, placement.

Jobs run as alice with the job Python environment `make job-python` builds on shared storage
(torch and Ray, from Debian's python3): the gateway's own venv may live under /root or /tmp,
which alice cannot read or the emulated nodes do not share. Julia cannot be installed here:
its renderer is tested as text in tests/unit/test_runtime_rendering.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from gateway.app import create_app
from gateway.config import GatewayConfig, WorkerConfig
from tests.integration.gateway_fixtures import (
    TokenFactory,
    bearer_headers,
    gateway_client,
    gateway_config,
    migrated_database,
    token_for,
)
from tests.integration.job_api_helpers import create_tenant, drain_accounts, wait_for_job
from tests.integration.slurm_cluster import SHARED_TEST_ROOT, wait_for_state

__all__ = ["gateway_client", "gateway_config", "migrated_database", "token_for"]

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slurm,
    pytest.mark.parametrize("database_url", ["sqlite"], indirect=True),
]

TENANT = "sgw_rt_a"
DATA = Path(__file__).parent / "data"
FAST_WORKERS = WorkerConfig(
    enabled=True, submit_interval_s=0.2, poll_interval_s=0.5, max_backoff_s=2, submit_lease_s=10
)
# The emulated InfiniBand tree (ansible/inventories/dev): two leaves of GPU nodes.
LEAVES = ({"gpu01", "gpu02"}, {"gpu03", "gpu04"})
# Built by `make job-python`; every node sees it and every user can run it.
JOB_PYTHON = os.environ.get("SGW_JOB_PYTHON", "/var/lib/slurm-gateway/job-python/bin/python3")


@pytest.fixture(scope="module")
def programs() -> Iterator[Path]:
    """allreduce (compiled with mpicc), the Ray driver and the torch program, readable by alice."""
    found = subprocess.run([JOB_PYTHON, "-c", "import ray, torch"], capture_output=True, check=False)
    if found.returncode != 0:
        pytest.fail(f"{JOB_PYTHON} cannot import torch and ray: run `make job-python`")
    directory = SHARED_TEST_ROOT / f"sgw_rt_{uuid.uuid4().hex[:12]}"
    directory.mkdir(parents=True)
    SHARED_TEST_ROOT.chmod(0o755)
    subprocess.run(["mpicc", "-o", str(directory / "allreduce"), str(DATA / "allreduce.c")], check=True)
    for name in ("ray_nodes.py", "torch_allreduce.py"):
        shutil.copy(DATA / name, directory / name)
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def slurm_driver() -> str:
    """The Slurm driver the app uses; a parametrize overrides it."""
    return "cli"


@pytest.fixture
def client(
    gateway_config: GatewayConfig, migrated_database: str, slurm_driver: str, token_for: TokenFactory
) -> Iterator[TestClient[Litestar]]:
    """The app with fast workers (default fabric: this machine's loopback) and tenant sgw_rt_a."""
    slurm = msgspec.structs.replace(gateway_config.slurm, driver=slurm_driver)
    config = msgspec.structs.replace(gateway_config, workers=FAST_WORKERS, slurm=slurm)
    with TestClient(create_app(config)) as test_client:
        create_tenant(test_client, token_for("sgw-rt-admin", None, ["admin"]), TENANT, {"alice": "alice"})
        yield test_client
    drain_accounts([TENANT])


@pytest.fixture
def alice(token_for: TokenFactory) -> str:
    return token_for("alice", TENANT, ["user"])


def run_job(client: TestClient[Litestar], token: str, body: dict[str, Any]) -> dict[str, Any]:
    """Submit ``body`` through the API and wait until the job ended; return its view."""
    response = client.post(
        "/v1/jobs", json={"partition": "gpu", "time_limit": "2", **body}, headers=bearer_headers(token)
    )
    assert response.status_code == 202, response.text
    return wait_for_job(
        client,
        token,
        response.json()["id"],
        lambda view: view["state"] not in ("accepted", "submitting", "pending", "running", "completing"),
        timeout_s=90,
    )


def job_output(config: GatewayConfig, view: dict[str, Any], stream: str = "out") -> str:
    return (
        Path(config.slurm.job_root) / TENANT / view["id"] / f"slurm-{view['slurm_job_id']}.{stream}"
    ).read_text()


def assert_completed(config: GatewayConfig, view: dict[str, Any]) -> None:
    assert (view["state"], view["exit_code"]) == ("completed", 0), job_output(config, view, "err")[-3000:]


@pytest.mark.parametrize("launcher", ["srun", "mpirun"])
def test_mpi_allreduce_across_two_nodes(
    client: TestClient[Litestar], gateway_config: GatewayConfig, alice: str, programs: Path, launcher: str
) -> None:
    view = run_job(
        client,
        alice,
        {
            "name": "sgw-rt-mpi",
            "runtime": "mpi",
            "mpi": {"launcher": launcher},
            "command": [str(programs / "allreduce")],
            "nodes": 2,
            "tasks_per_node": 2,
        },
    )
    assert_completed(gateway_config, view)
    lines = sorted(job_output(gateway_config, view).splitlines())
    assert [line.split()[0] for line in lines] == ["rank=0", "rank=1", "rank=2", "rank=3"]
    assert {line.split()[1] for line in lines} == {"size=4"}
    assert {line.split()[3] for line in lines} == {"sum=10"}
    assert len({line.split()[2] for line in lines}) == 2


def test_torchrun_gloo_all_reduce_across_two_nodes(
    client: TestClient[Litestar], gateway_config: GatewayConfig, alice: str, programs: Path
) -> None:
    view = run_job(
        client,
        alice,
        {
            "name": "sgw-rt-torch",
            "runtime": "torchrun",
            "torchrun": {"python": JOB_PYTHON},
            "command": [str(programs / "torch_allreduce.py")],
            "nodes": 2,
        },
    )
    assert_completed(gateway_config, view)
    lines = sorted(job_output(gateway_config, view).splitlines())
    assert [line.split()[:2] for line in lines] == [["rank=0", "world=2"], ["rank=1", "world=2"]]
    assert {line.split()[3] for line in lines} == {"sum=3"}
    assert len({line.split()[2] for line in lines}) == 2


def test_ray_driver_sees_both_nodes_and_their_gpus(
    client: TestClient[Litestar], gateway_config: GatewayConfig, alice: str, programs: Path
) -> None:
    view = run_job(
        client,
        alice,
        {
            "name": "sgw-rt-ray",
            "runtime": "ray",
            "ray": {"object_store_mb": 100, "python": JOB_PYTHON},
            "command": [JOB_PYTHON, str(programs / "ray_nodes.py")],
            "nodes": 2,
            "cpus_per_task": 2,
            "gpus_per_node": 4,
            "memory": "1000M",
        },
    )
    assert_completed(gateway_config, view)
    seen = json.loads(job_output(gateway_config, view).strip().splitlines()[-1])
    record = wait_for_state(view["slurm_job_id"])
    assert seen["nodes"] == 2
    assert seen["gpus"] == [4.0, 4.0]
    assert seen["task_hosts"] == sorted(record["NodeList"].replace("gpu[01-02]", "gpu01,gpu02").split(","))
    assert len(set(seen["task_hosts"])) == 2


def test_a_switches_1_job_lands_under_one_leaf(
    client: TestClient[Litestar], gateway_config: GatewayConfig, alice: str
) -> None:
    view = run_job(
        client,
        alice,
        {
            "name": "sgw-rt-leaf",
            "command": ["hostname"],
            "nodes": 2,
            "switches": 1,
            "switches_wait": "1",
            "exclusive": True,
        },
    )
    assert_completed(gateway_config, view)
    hosts = set(job_output(gateway_config, view).split()) | set(
        subprocess.run(
            ["scontrol", "show", "hostnames", wait_for_state(view["slurm_job_id"])["NodeList"]],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
    )
    assert len(hosts) == 2
    assert any(hosts <= leaf for leaf in LEAVES), hosts


@pytest.mark.parametrize("slurm_driver", ["rest"])
def test_rest_driver_runs_exclusive_jobs_and_refuses_switches(
    client: TestClient[Litestar], gateway_config: GatewayConfig, alice: str
) -> None:
    exclusive = run_job(
        client, alice, {"name": "sgw-rt-excl", "command": ["srun", "hostname"], "nodes": 2, "exclusive": True}
    )
    assert_completed(gateway_config, exclusive)
    assert len(set(job_output(gateway_config, exclusive).split())) == 2
    switches = run_job(
        client, alice, {"name": "sgw-rt-leaf", "command": ["hostname"], "nodes": 2, "switches": 1}
    )
    assert switches["state"] == "submit_failed"
    assert switches["state_reason"].startswith("switches: slurmrestd 22.05 cannot")


def test_bad_runtime_options_are_a_problem_naming_the_field(client: TestClient[Litestar], alice: str) -> None:
    bodies = [
        ({"runtime": "mpi", "mpi": {"launcher": "hydra"}}, "mpi.launcher"),
        ({"runtime": "ray", "ray": {"python": "python3;id"}}, "ray.python"),
        ({"runtime": "ray", "ray": {"unknown": 1}}, "ray.unknown"),
        ({"runtime": "mpi", "torchrun": {}}, "torchrun"),
        ({"runtime": "julia", "julia": {"depot_path": "/x/../y"}}, "julia.depot_path"),
        ({"runtime": "torchrun", "command": None, "script": "torchrun x.py"}, "command"),
        ({"switches": 99}, "switches"),
        ({"switches_wait": "5"}, "switches_wait"),
    ]
    mismatches = []
    for body, field in bodies:
        response = client.post(
            "/v1/jobs",
            json={"name": "sgw-rt-bad", "command": ["true"], **body},
            headers=bearer_headers(alice),
        )
        fields = [error["field"] for error in response.json().get("errors", [])]
        if response.status_code != 422 or field not in fields:
            mismatches.append((body, response.status_code, response.json()))
    assert mismatches == []
