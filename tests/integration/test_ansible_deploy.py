"""The one playbook on the dev inventory: cluster, gateway and tenants, then jobs through it.

`ansible/site.yml` provisions the (already running) cluster, deploys the gateway from this
checkout on port 8010 with the dev launcher, and creates tenants ansible_a and ansible_b with
their QOS, members, budget and rate card through the gateway's API. Each tenant's member then
runs a job through that deployed gateway. A second run changes nothing; a check run with one
tenant changed in the inventory reports exactly that change and makes none. The deployed gateway
is stopped at the end: the next session's first run starts it again (a change, which no test
asserts against), and a gateway left running would outlive the test suite.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import pytest
import yaml

from gateway.job_states import TERMINAL_STATES
from tests.integration.slurm_cluster import job_record, wait_for_state

pytestmark = [pytest.mark.integration, pytest.mark.slurm]

REPO_ROOT = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = REPO_ROOT / "ansible"
VENV_BIN = REPO_ROOT / ".venv" / "bin"
DEV_INVENTORY = ANSIBLE_DIR / "inventories" / "dev" / "hosts.yml"
DEV_GATEWAY_VARS = ANSIBLE_DIR / "inventories" / "dev" / "group_vars" / "gateway.yml"
GATEWAY_VARS = yaml.safe_load(DEV_GATEWAY_VARS.read_text())
BASE_URL = f"http://127.0.0.1:{GATEWAY_VARS['gateway_port']}"
GATEWAY_CLI = Path(GATEWAY_VARS["gateway_venv"]) / "bin" / "slurm-gateway"
GATEWAY_CONFIG = GATEWAY_VARS["gateway_config_path"]
# The role's default: the secrets file beside the configuration.
GATEWAY_ENVIRONMENT_FILE = Path(GATEWAY_CONFIG).parent / "gateway.env"
DEV_LAUNCHER = "/usr/local/sbin/slurm-gateway-dev"
PLAYBOOK_TIMEOUT_S = 600
JOB_TIMEOUT_S = 120
QOS_RECORD_TIMEOUT_S = 30

# "TASK [role : name] ****" opens a task; "changed: [host]" lines report its changes.
TASK_HEADER = re.compile(r"^TASK \[(?P<name>.+?)\] \*+$")
CHANGED_LINE = re.compile(r"^changed: \[")
RECAP = re.compile(
    r"^localhost\s+: ok=\d+\s+changed=(?P<changed>\d+)\s+unreachable=0\s+failed=0\b", re.MULTILINE
)


class PlaybookRun(NamedTuple):
    """What one ansible-playbook run reported."""

    changed: int
    changed_tasks: list[str]
    output: str


def run_site(*args: str) -> PlaybookRun:
    """Run ansible/site.yml on the dev inventory; fail with the output's tail unless it succeeded."""
    result = subprocess.run(
        [str(VENV_BIN / "ansible-playbook"), "-i", str(DEV_INVENTORY), str(ANSIBLE_DIR / "site.yml"), *args],
        capture_output=True,
        text=True,
        timeout=PLAYBOOK_TIMEOUT_S,
        check=False,
        env={
            "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"),
            "ANSIBLE_NOCOLOR": "1",
            "PATH": f"{VENV_BIN}:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": os.environ.get("HOME", "/root"),
            "LANG": "C.UTF-8",
        },
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    recap = RECAP.search(result.stdout)
    assert recap is not None, result.stdout[-4000:]
    return PlaybookRun(int(recap["changed"]), changed_tasks(result.stdout), result.stdout)


def changed_tasks(output: str) -> list[str]:
    """The tasks that reported a change, in order, once each ("role : name")."""
    names: list[str] = []
    task = ""
    for line in output.splitlines():
        header = TASK_HEADER.match(line)
        if header:
            task = header["name"]
        elif CHANGED_LINE.match(line) and task not in names:
            names.append(task)
    return names


def gateway_token(*args: str) -> str:
    """A token minted by the deployed gateway's own CLI and configuration."""
    return subprocess.run(
        [str(GATEWAY_CLI), "token", "--config", GATEWAY_CONFIG, *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.strip()


def bearer(token: str) -> dict[str, str]:
    """Authorization header for a bearer token."""
    return {"Authorization": f"Bearer {token}"}


def sacctmgr_show(*args: str) -> list[str]:
    """The lines of `sacctmgr -nP show ...`."""
    return subprocess.run(
        ["sacctmgr", "-nP", "show", *args], capture_output=True, text=True, check=True, timeout=30
    ).stdout.split()


def tenant_inventory(tenant_id: str) -> dict[str, Any]:
    """The tenant as the dev inventory describes it."""
    return next(tenant for tenant in GATEWAY_VARS["gateway_tenants"] if tenant["id"] == tenant_id)


@pytest.fixture(scope="module")
def deployed() -> Iterator[PlaybookRun]:
    """site.yml applied once; the deployed gateway stopped afterwards."""
    try:
        yield run_site()
    finally:
        subprocess.run([DEV_LAUNCHER, "stop"], capture_output=True, timeout=60, check=False)


@pytest.fixture(scope="module")
def admin_client(deployed: PlaybookRun) -> Iterator[httpx.Client]:
    """An HTTP client of the deployed gateway with an admin token."""
    token = gateway_token("--user", "test", "--role", "admin")
    with httpx.Client(base_url=BASE_URL, headers=bearer(token), timeout=30) as client:
        yield client


def test_site_deploys_a_gateway_whose_tenants_match_the_inventory(
    deployed: PlaybookRun, admin_client: httpx.Client
) -> None:
    assert httpx.get(f"{BASE_URL}/readyz", timeout=10).status_code == 200
    # Secrets have their own root-only file; the configuration keeps its --diff.
    assert GATEWAY_ENVIRONMENT_FILE.stat().st_mode & 0o777 == 0o600
    for tenant_id in ("ansible_a", "ansible_b"):
        wanted = tenant_inventory(tenant_id)
        tenant = admin_client.get(f"/v1/tenants/{tenant_id}").json()
        assert tenant["slurm_account"] == wanted["slurm_account"]
        assert tenant["allowed_qos"] == wanted["allowed_qos"]
        assert tenant["default_qos"] == wanted["default_qos"]
        assert tenant["allowed_partitions"] == wanted["allowed_partitions"]
        assert {member["user"]: member["unix_user"] for member in tenant["members"]} == wanted["members"]
        assert tenant["provisioning_error"] is None
    budget = admin_client.get("/v1/tenants/ansible_a/budget").json()["budget"]
    assert (float(budget["gpu_hours"]), float(budget["amount"])) == (500.0, 2000.0)
    cards = admin_client.get("/v1/rate-cards").json()["rate_cards"]
    assert "2026-01-01T00:00:00Z" in {card["effective_from"] for card in cards}
    qos = sacctmgr_show("qos", "ansible_std", "format=Name,MaxWall,GrpTRES")
    assert qos == ["ansible_std|1-00:00:00|gres/gpu=8"]


@pytest.mark.parametrize(("tenant_id", "user"), [("ansible_a", "alice"), ("ansible_b", "bob")])
def test_deployed_gateway_runs_a_job_for_each_tenant(
    deployed: PlaybookRun, tenant_id: str, user: str
) -> None:
    token = gateway_token("--tenant", tenant_id, "--user", user, "--role", "user")
    with httpx.Client(base_url=BASE_URL, headers=bearer(token), timeout=30) as client:
        accepted = client.post(
            "/v1/jobs",
            json={"name": "ansible-deploy", "command": ["hostname"], "partition": "cpu", "time_limit": "2"},
            headers={"Idempotency-Key": uuid.uuid4().hex},
        )
        assert accepted.status_code == 202, accepted.text
        job_url = f"/v1/jobs/{accepted.json()['id']}"
        deadline = time.monotonic() + JOB_TIMEOUT_S
        job = client.get(job_url).json()
        while job["state"] not in TERMINAL_STATES and time.monotonic() < deadline:
            time.sleep(1)
            job = client.get(job_url).json()
    assert job["state"] == "completed", job
    # Slurm ran it under the tenant's account, as the member, in the tenant's default QOS.
    wait_for_state(job["slurm_job_id"])
    (qos_id,) = sacctmgr_show("qos", tenant_inventory(tenant_id)["default_qos"], "format=ID")
    record = job_record(job["slurm_job_id"], ["Account", "User", "QOSRAW"])
    # A job that ended within a second or two was seen with QOS 0 ("Unknown") in sacct for a few
    # seconds more, before slurmdbd filled it in.
    deadline = time.monotonic() + QOS_RECORD_TIMEOUT_S
    while record["QOSRAW"] == "0" and time.monotonic() < deadline:
        time.sleep(1)
        record = job_record(job["slurm_job_id"], ["Account", "User", "QOSRAW"])
    assert record == {"Account": tenant_id, "User": user, "QOSRAW": qos_id}


def test_second_run_of_site_changes_nothing(deployed: PlaybookRun) -> None:
    second = run_site()
    assert second.changed_tasks == []
    assert second.changed == 0


def test_check_mode_reports_exactly_the_inventory_change_and_makes_none(
    deployed: PlaybookRun, admin_client: httpx.Client, tmp_path: Path
) -> None:
    tenants = json.loads(json.dumps(GATEWAY_VARS["gateway_tenants"]))
    changed_tenant = next(tenant for tenant in tenants if tenant["id"] == "ansible_b")
    changed_tenant["allowed_qos"] = [*changed_tenant["allowed_qos"], "ansible_std"]
    extra_vars = tmp_path / "changed-tenant.json"
    extra_vars.write_text(json.dumps({"gateway_tenants": tenants}))

    check = run_site("--check", "--diff", "-e", f"@{extra_vars}")

    assert check.changed_tasks == ["tenants : Would update tenant ansible_b"]
    assert check.changed == 1
    # The request it would send, as the debug task prints it (a JSON string).
    request = 'PATCH /v1/tenants/ansible_b {"allowed_qos": ["ansible_low", "ansible_std"]}'
    assert json.dumps(request) in check.output
    assert admin_client.get("/v1/tenants/ansible_b").json()["allowed_qos"] == ["ansible_low"]
    associations = sacctmgr_show("assoc", "account=ansible_b", "format=User,QOS")
    # The account's own association (no user) and bob's keep the one QOS.
    assert sorted(associations) == ["bob|ansible_low", "|ansible_low"]


def test_systemd_unit_of_the_deployment_verifies(deployed: PlaybookRun, tmp_path: Path) -> None:
    # The dev machine runs the launcher; the unit a systemd host gets is rendered from the same
    # variables and checked by systemd itself (ExecStart must exist: the deployed virtualenv).
    unit = tmp_path / "slurm-gateway.service"
    rendered = subprocess.run(
        [
            str(VENV_BIN / "ansible"),
            "localhost",
            "-i",
            "localhost,",
            "-c",
            "local",
            "-e",
            f"ansible_python_interpreter={sys.executable}",
            "-m",
            "ansible.builtin.template",
            "-a",
            f"src={ANSIBLE_DIR / 'roles' / 'gateway' / 'templates' / 'slurm-gateway.service.j2'} dest={unit}",
            "-e",
            f"@{ANSIBLE_DIR / 'roles' / 'gateway' / 'defaults' / 'main.yml'}",
            "-e",
            f"@{DEV_GATEWAY_VARS}",
            "-e",
            f"playbook_dir={ANSIBLE_DIR}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={
            "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"),
            "PATH": f"{VENV_BIN}:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": os.environ.get("HOME", "/root"),
            "LANG": "C.UTF-8",
        },
    )
    assert rendered.returncode == 0, rendered.stdout[-2000:]
    unit_text = unit.read_text()
    assert f"ExecStart={GATEWAY_CLI} serve --config {GATEWAY_CONFIG}" in unit_text
    assert f"EnvironmentFile={GATEWAY_ENVIRONMENT_FILE}" in unit_text
    assert f"RequiresMountsFor={GATEWAY_VARS['gateway_job_root']}" in unit_text
    verified = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    # systemd-analyze exits 0 on some bad settings but names them on stderr.
    assert (verified.returncode, verified.stderr) == (0, "")
