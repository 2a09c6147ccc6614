"""The dev cluster is a real Slurm cluster: topology, GPUs, MPI, accounting, JWT, Ansible."""

from __future__ import annotations

import re
import shutil
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest

from tests.integration.slurm_cluster import (
    SHARED_TEST_ROOT,
    ensure_account,
    expand_hostlist,
    queue_state,
    run_command,
    submit_batch,
    wait_for_state,
)

pytestmark = [pytest.mark.integration, pytest.mark.slurm]

REPO_ROOT = Path(__file__).resolve().parents[2]
GPU_NODES = {"gpu01", "gpu02", "gpu03", "gpu04"}
CPU_NODES = {"cpu01", "cpu02"}
LEAF_SWITCHES = ({"gpu01", "gpu02"}, {"gpu03", "gpu04"})
JWT_KEY = Path("/var/lib/slurm/slurmctld/jwt_hs256.key")
REST_URL = "http://127.0.0.1:6820"
# Open MPI over loopback TCP: the emulated nodes share one host and have no fabric.
MPI_ENV = "export OMPI_MCA_btl=self,tcp OMPI_MCA_btl_tcp_if_include=lo OMPI_MCA_oob_tcp_if_include=lo"


@pytest.fixture
def job_dir() -> Iterator[Path]:
    """A working directory visible to every node, owned by the job user alice."""
    path = SHARED_TEST_ROOT / f"job-{uuid.uuid4().hex[:12]}"
    path.mkdir(parents=True)
    SHARED_TEST_ROOT.chmod(0o755)
    shutil.chown(path, "alice", "alice")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def tenant_accounts() -> dict[str, str]:
    """Two Slurm accounts; alice is associated with the first only."""
    ensure_account("sgw_test_a", ["alice"])
    ensure_account("sgw_test_b", ["bob"])
    return {"mine": "sgw_test_a", "not_mine": "sgw_test_b"}


def as_alice(*args: str) -> list[str]:
    return ["--uid=alice", "--gid=alice", *args]


def test_sinfo_shows_six_idle_nodes_in_two_partitions() -> None:
    deadline = time.monotonic() + 60
    while True:
        lines = run_command(["sinfo", "--Node", "--noheader", "--format=%N|%P|%G|%f|%t"]).stdout.splitlines()
        rows = [line.split("|") for line in lines]
        if all(state == "idle" for *_, state in rows) or time.monotonic() > deadline:
            break
        time.sleep(1)
    by_partition: dict[str, set[str]] = {}
    for node, partition, gres, features, state in rows:
        by_partition.setdefault(partition.rstrip("*"), set()).add(node)
        assert state == "idle", f"{node} is {state}"
        if node in GPU_NODES:
            assert gres == "gpu:h100:4"
            assert features == "ib,h100"
        else:
            assert gres == "(null)"
    assert by_partition == {"gpu": GPU_NODES, "cpu": CPU_NODES}


def test_topology_has_two_gpu_leaves_under_one_spine() -> None:
    topology = run_command(["scontrol", "show", "topology"]).stdout
    switches = dict(re.findall(r"SwitchName=(\S+) Level=\d+ .*?Nodes=(\S+)", topology))
    assert set(expand_hostlist(switches["leaf1"])) == {"gpu01", "gpu02"}
    assert set(expand_hostlist(switches["leaf2"])) == {"gpu03", "gpu04"}
    assert set(expand_hostlist(switches["spine"])) >= GPU_NODES


def test_switches_one_keeps_a_two_node_job_under_one_leaf(
    job_dir: Path, tenant_accounts: dict[str, str]
) -> None:
    # Occupy one node per leaf: the two free nodes (gpu01, gpu04) are under different leaves,
    # so a --switches=1 job must wait rather than take them.
    common = as_alice(
        "--account",
        tenant_accounts["mine"],
        "--partition=gpu",
        "--exclusive",
        f"--chdir={job_dir}",
        f"--output={job_dir}/%j.out",
    )
    blockers = [
        submit_batch([*common, f"--nodelist={node}", "--wrap=sleep 120"]) for node in ("gpu02", "gpu03")
    ]
    try:
        for blocker in blockers:
            wait_for_state(blocker, frozenset({"RUNNING"}), timeout=60)
        job = submit_batch(
            [
                *common,
                "--nodes=2",
                "--switches=1@05:00",
                f"--output={job_dir}/switches.out",
                "--wrap=srun hostname",
            ]
        )
        time.sleep(3)
        assert queue_state(job) == "PENDING", "a --switches=1 job took nodes under two leaves"
        run_command(["scancel", blockers[0]])
        record = wait_for_state(job, timeout=120)
    finally:
        run_command(["scancel", *blockers], check=False)
    assert record["State"] == "COMPLETED"
    nodes = set(expand_hostlist(record["NodeList"]))
    assert nodes == {"gpu01", "gpu02"}
    assert set((job_dir / "switches.out").read_text().split()) == nodes
    assert any(nodes <= leaf for leaf in LEAF_SWITCHES)


def test_mpi_allreduce_over_two_nodes_with_pmix(job_dir: Path, tenant_accounts: dict[str, str]) -> None:
    binary = job_dir / "allreduce"
    run_command(["mpicc", "-o", str(binary), str(Path(__file__).parent / "data" / "allreduce.c")])
    script = job_dir / "job.sh"
    script.write_text(f"#!/bin/bash\n{MPI_ENV}\nsrun --mpi=pmix {binary}\n")
    job = submit_batch(
        as_alice(
            "--account",
            tenant_accounts["mine"],
            "--partition=gpu",
            "--nodes=2",
            "--ntasks-per-node=2",
            f"--chdir={job_dir}",
            f"--output={job_dir}/out.txt",
            str(script),
        )
    )
    record = wait_for_state(job)
    output = (job_dir / "out.txt").read_text()
    assert record["State"] == "COMPLETED", output
    ranks = re.findall(r"rank=(\d+) size=4 host=(\S+) sum=(\d+)", output)
    assert sorted(int(rank) for rank, _, _ in ranks) == [0, 1, 2, 3]
    assert {total for _, _, total in ranks} == {"10"}  # 1+2+3+4
    assert len({host for _, host, _ in ranks}) == 2


def test_account_without_association_is_refused_by_slurm(
    job_dir: Path, tenant_accounts: dict[str, str]
) -> None:
    common = as_alice("--partition=cpu", f"--chdir={job_dir}", f"--output={job_dir}/%j.out", "--wrap=true")
    refused = run_command(["sbatch", "--account", tenant_accounts["not_mine"], *common], check=False)
    assert refused.returncode != 0
    assert "Invalid account" in refused.stderr
    accepted = submit_batch(["--account", tenant_accounts["mine"], *common])
    assert wait_for_state(accepted)["State"] == "COMPLETED"


def test_finished_gpu_job_is_in_sacct_with_gres_gpu(job_dir: Path, tenant_accounts: dict[str, str]) -> None:
    job = submit_batch(
        as_alice(
            "--account",
            tenant_accounts["mine"],
            "--partition=gpu",
            "--gres=gpu:h100:2",
            f"--chdir={job_dir}",
            f"--output={job_dir}/out.txt",
            "--wrap=hostname",
        )
    )
    record = wait_for_state(job)
    assert record["State"] == "COMPLETED"
    assert record["User"] == "alice"
    assert record["Account"] == tenant_accounts["mine"]
    tres = dict(item.split("=", 1) for item in record["AllocTRES"].split(","))
    assert tres["gres/gpu"] == "2"


def test_sreport_answers_from_slurmdbd() -> None:
    # Utilization rows appear only after slurmdbd's hourly rollup, so a fresh cluster has none;
    # what can be checked is that sreport reaches slurmdbd and answers with its report layout.
    report = run_command(["sreport", "--parsable2", "cluster", "utilization", "--tres=cpu,gres/gpu"]).stdout
    assert "Cluster|TRES Name|Allocated|Down|" in report


def rest_ping(token: str) -> urllib.request.Request:
    return urllib.request.Request(
        f"{REST_URL}/slurm/v0.0.38/ping",
        headers={"X-SLURM-USER-NAME": "alice", "X-SLURM-USER-TOKEN": token},
    )


def test_slurmrestd_answers_ping_with_a_pyjwt_token() -> None:
    now = int(time.time())
    token = jwt.encode(
        {"iat": now, "exp": now + 300, "sun": "alice"}, JWT_KEY.read_bytes(), algorithm="HS256"
    )
    with urllib.request.urlopen(rest_ping(token), timeout=10) as response:
        body = response.read().decode()
    assert '"ping": "UP"' in body.replace('":"', '": "')


def test_slurmrestd_refuses_a_token_signed_with_another_key() -> None:
    now = int(time.time())
    forged = jwt.encode({"iat": now, "exp": now + 300, "sun": "alice"}, b"x" * 32, algorithm="HS256")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(rest_ping(forged), timeout=10)
    refused.value.close()
    assert refused.value.code >= 400
