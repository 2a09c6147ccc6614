"""Accounting end to end on the real cluster: a mixed workload of two tenants, reconciled into the
ledger, must equal an independent recomputation from the raw ``sacct -D`` rows, to the cent per
tenant and partition, in the ledger and in finance's CSV; a second reconcile adds nothing; a
still-running job is billed only once it ends. Admission refuses at 90 % of a budget with the
terms, and once a budget is exhausted the Slurm backstop refuses a direct ``sbatch``.

The recomputation below is deliberately the test's own (a small parser of sacct's parsable rows
and Decimal arithmetic), never the project's pricing or parsing code.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import subprocess
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator, Set
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from accounting.budget_backstop import sync_budget_backstop
from accounting.ledger_models import LedgerEntry, UsageRecordRow
from accounting.usage_reconciler import reconcile_usage
from gateway.app import create_app
from gateway.cli import main as cli_main
from gateway.config import AccountingConfig, GatewayConfig, WorkerConfig
from gateway.database import create_database_engine
from gateway.schema_migrations import migrate_to_head
from slurm.association_limits import BudgetLock, apply_budget_locks
from slurm.command_runner import SubprocessCommandRunner
from tests.integration.gateway_fixtures import bearer_headers, gateway_config, token_for
from tests.integration.job_api_helpers import create_tenant, drain_accounts, wait_for_job
from tests.integration.slurm_cluster import SHARED_TEST_ROOT, queue_state, run_command

pytestmark = [pytest.mark.integration, pytest.mark.slurm]

__all__ = ["gateway_config", "token_for"]

TENANT_A = "sgw_acct_e2e_a"
TENANT_B = "sgw_acct_e2e_b"
ACCOUNTS = (TENANT_A, TENANT_B)
USER_A, USER_B = "alice", "bob"
# Per TRES-hour (memory per GiB-hour); a QOS multiplier on top. Large enough that seconds of
# use are cents, so a wrong second or TRES shows in the totals.
PRICES = {
    "gpu": {"gpu": "36.00", "cpu": "0.72", "mem": "0.36", "node": "3.60"},
    "cpu": {"cpu": "1.80", "mem": "0.36", "node": "0.72"},
}
QOS_MULTIPLIERS = {"normal": "1.5"}
CURRENCY = "EUR"
# Fields of the test's own sacct query (no free text, so "|" never occurs in a value).
SACCT_FIELDS = ("JobIDRaw", "State", "Account", "Partition", "QOS", "Submit", "Start", "End", "AllocTRES")
NOT_FINAL = {"PENDING", "RUNNING", "SUSPENDED", "REQUEUE_HOLD", "REQUEUE_FED", "COMPLETING"}
CENT = Decimal("0.01")
MICRO = Decimal("0.000001")


@pytest.fixture
def database_url(sqlite_database_url: str) -> str:
    """One database is enough here: the ledger's SQL is covered on both by the reconciler's tests."""
    return sqlite_database_url


@pytest.fixture
def accounting_config(gateway_config: GatewayConfig) -> GatewayConfig:
    """Submitter and job reconciler on; the accounting loop off, so the test decides when to reconcile."""
    return msgspec.structs.replace(
        gateway_config, workers=WorkerConfig(enabled=True), accounting=AccountingConfig(enabled=False)
    )


@pytest.fixture
def client(accounting_config: GatewayConfig) -> Iterator[TestClient[Litestar]]:
    migrate_to_head(accounting_config.database.url)
    with TestClient(create_app(accounting_config)) as test_client:
        yield test_client


@pytest.fixture
def session_factory(accounting_config: GatewayConfig) -> Iterator[sessionmaker[Session]]:
    engine = create_database_engine(accounting_config.database.url)
    yield sessionmaker(engine, expire_on_commit=False)
    engine.dispose()


@pytest.fixture
def runner() -> SubprocessCommandRunner:
    return SubprocessCommandRunner(timeout_s=120)


@pytest.fixture
def unlocked_accounts(runner: SubprocessCommandRunner) -> Iterator[None]:
    """Leave the tenants' accounts idle and without budget locks, whatever the test did."""
    yield
    drain_accounts(ACCOUNTS)
    apply_budget_locks(runner, {account: BudgetLock() for account in ACCOUNTS})


# --- the test's own recomputation ------------------------------------------------------------


@dataclass(frozen=True)
class SacctRow:
    job_id_raw: str
    state: str
    account: str
    partition: str
    qos: str
    submit: int
    start: int | None
    end: int | None
    tres: dict[str, int]  # cpu, mem (MB), gpu, node


@dataclass
class Expected:
    """Use and cost of one tenant and partition, as this test computes them."""

    cpu_seconds: int = 0
    gpu_seconds: int = 0
    amount: Decimal = Decimal(0)  # sum of per-job amounts, each quantized to micro-units


def raw_sacct_rows(since: int) -> list[SacctRow]:
    """`sacct -D -X --parsable2` rows of the tenants' accounts since ``since``, parsed here."""
    out = subprocess.run(
        [
            "sacct",
            "-D",
            "-X",
            "--allusers",
            "--parsable2",
            "--noheader",
            "--noconvert",
            f"--accounts={','.join(ACCOUNTS)}",
            f"--starttime={datetime.fromtimestamp(since, UTC).strftime('%Y-%m-%dT%H:%M:%S')}",
            f"--format={','.join(SACCT_FIELDS)}",
        ],
        env={**os.environ, "TZ": "UTC", "SLURM_TIME_FORMAT": "%s"},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    rows = []
    for line in out.splitlines():
        values = dict(zip(SACCT_FIELDS, line.split("|"), strict=True))
        rows.append(
            SacctRow(
                job_id_raw=values["JobIDRaw"],
                state=values["State"].split()[0],
                account=values["Account"],
                partition=values["Partition"],
                qos=values["QOS"],
                submit=int(values["Submit"]),
                start=int(values["Start"]) if values["Start"].isdigit() else None,
                end=int(values["End"]) if values["End"].isdigit() else None,
                tres=parse_alloc_tres(values["AllocTRES"]),
            )
        )
    return rows


def parse_alloc_tres(text: str) -> dict[str, int]:
    """cpu, mem (MB), gpu and node counts of "billing=2,cpu=2,gres/gpu:h100=1,gres/gpu=1,mem=1000M,node=1"."""
    counts = {"cpu": 0, "mem": 0, "gpu": 0, "node": 0}
    for item in filter(None, text.split(",")):
        name, _, value = item.partition("=")
        if name in ("cpu", "node"):
            counts[name] = int(value)
        elif name == "gres/gpu":
            counts["gpu"] = int(value)
        elif name == "mem":
            assert value.endswith("M"), f"--noconvert memory is in MB: {item}"
            counts["mem"] = int(value[:-1])
    return counts


def recompute(rows: list[SacctRow]) -> dict[tuple[str, str], Expected]:
    """Use and cost per (tenant, partition) of the final, started rows: billed from Start (or
    Submit, when later: a resized job's new record) to End."""
    expected: dict[tuple[str, str], Expected] = defaultdict(Expected)
    for row in rows:
        if row.state in NOT_FINAL or row.start is None or row.end is None:
            continue
        seconds = row.end - max(row.start, row.submit)
        if seconds <= 0:
            continue
        prices = {name: Decimal(value) for name, value in PRICES[row.partition].items()}
        per_hour = (
            row.tres["cpu"] * prices.get("cpu", Decimal(0))
            + Decimal(row.tres["mem"]) / 1024 * prices.get("mem", Decimal(0))
            + row.tres["gpu"] * prices.get("gpu", Decimal(0))
            + row.tres["node"] * prices.get("node", Decimal(0))
        )
        multiplier = Decimal(QOS_MULTIPLIERS.get(row.qos, "1"))
        amount = (per_hour * seconds / 3600 * multiplier).quantize(MICRO, rounding=ROUND_HALF_EVEN)
        totals = expected[(row.account, row.partition)]
        totals.cpu_seconds += row.tres["cpu"] * seconds
        totals.gpu_seconds += row.tres["gpu"] * seconds
        totals.amount += amount
    return dict(expected)


def cents(amount: Decimal) -> Decimal:
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


def ledger_totals(session_factory: sessionmaker[Session]) -> dict[tuple[str, str], tuple[int, int, Decimal]]:
    """(cpu_seconds, gpu_seconds, amount) per (tenant, partition) from the ledger's entries."""
    with session_factory() as session:
        rows = session.execute(
            select(
                LedgerEntry.tenant_id,
                LedgerEntry.partition,
                func.sum(LedgerEntry.cpu_seconds),
                func.sum(LedgerEntry.gpu_seconds),
                func.sum(LedgerEntry.amount_micros),
            )
            .where(LedgerEntry.tenant_id.in_(ACCOUNTS))
            .group_by(LedgerEntry.tenant_id, LedgerEntry.partition)
        ).all()
    return {
        (tenant, partition): (int(cpu), int(gpu), Decimal(int(micros)) / 1_000_000)
        for tenant, partition, cpu, gpu, micros in rows
        if tenant is not None
    }


def assert_ledger_matches(
    session_factory: sessionmaker[Session], expected: dict[tuple[str, str], Expected]
) -> None:
    ledger = ledger_totals(session_factory)
    assert set(ledger) == set(expected)
    for key, totals in expected.items():
        cpu_seconds, gpu_seconds, amount = ledger[key]
        assert (cpu_seconds, gpu_seconds) == (totals.cpu_seconds, totals.gpu_seconds), key
        assert cents(amount) == cents(totals.amount), key


def assert_csv_matches(csv_text: str, expected: dict[tuple[str, str], Expected]) -> None:
    rows = [row for row in csv.DictReader(io.StringIO(csv_text)) if row["tenant"] in ACCOUNTS]
    by_key = {(row["tenant"], row["partition"]): row for row in rows}
    assert len(by_key) == len(rows)
    assert set(by_key) == set(expected)
    for key, totals in expected.items():
        row = by_key[key]
        assert row["currency"] == CURRENCY
        assert Decimal(row["amount"]) == cents(totals.amount), key
        assert Decimal(row["gpu_hours"]) == hours(totals.gpu_seconds), key
        assert Decimal(row["cpu_hours"]) == hours(totals.cpu_seconds), key


def hours(seconds: int) -> Decimal:
    return (Decimal(seconds) / 3600).quantize(MICRO, rounding=ROUND_HALF_UP)


# --- driving the cluster -----------------------------------------------------------------------


def submit(client: TestClient[Litestar], token: str, **fields: Any) -> str:
    body = {
        "name": "sgw-acct-e2e",
        "command": ["sleep", "2"],
        "partition": "cpu",
        "time_limit": "2",
        **fields,
    }
    response = client.post("/v1/jobs", json=body, headers=bearer_headers(token))
    assert response.status_code in (200, 201, 202), response.text
    return str(response.json()["id"])


def slurm_id(client: TestClient[Litestar], token: str, job_id: str) -> str:
    view = wait_for_job(client, token, job_id, lambda view: view["slurm_job_id"] is not None, timeout_s=60)
    return str(view["slurm_job_id"])


def wait_running(job_id: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while queue_state(job_id) != "RUNNING":
        assert time.monotonic() < deadline, f"job {job_id} not running after {timeout_s} s"
        time.sleep(0.3)


def run_again_now(job_id: str, timeout_s: float = 90) -> None:
    """Start a requeued job again now: Slurm holds it back ~2 minutes (BeginTime) otherwise.

    The hold is set once the requeued run has finished completing, so the start time is moved
    each time the job is seen pending, until it runs. Two seconds ahead, not "now": a job
    started again in the second it was requeued can fail with "Job credential revoked".
    """
    deadline = time.monotonic() + timeout_s
    seen_pending = False
    moved_at = -math.inf
    while (state := queue_state(job_id)) != "RUNNING" or not seen_pending:
        assert time.monotonic() < deadline, f"requeued job {job_id} not running again after {timeout_s} s"
        if state == "PENDING":
            seen_pending = True
            # Moved again only once the last move had time to take: each move sets it 2 s ahead.
            if time.monotonic() - moved_at > 4:
                run_command(["scontrol", "update", f"jobid={job_id}", "starttime=now+2"], check=False)
                moved_at = time.monotonic()
        time.sleep(0.5)


def wait_final(since: int, *, except_jobs: Set[str] = frozenset(), timeout_s: float = 120) -> list[SacctRow]:
    """sacct rows once every record (other than ``except_jobs``) is final and nothing is queued."""
    deadline = time.monotonic() + timeout_s
    while True:
        rows = raw_sacct_rows(since)
        pending = [row for row in rows if row.state in NOT_FINAL and row.job_id_raw not in except_jobs]
        queued = run_command(
            ["squeue", "--noheader", f"--account={','.join(ACCOUNTS)}", "--format=%i"]
        ).stdout
        queued_ids = set(queued.split()) - except_jobs
        if not pending and not queued_ids:
            return rows
        assert time.monotonic() < deadline, f"still not final after {timeout_s} s: {pending} {queued_ids}"
        time.sleep(1)


def direct_sbatch(user: str, account: str, *args: str) -> Any:
    return run_command(
        [
            "runuser",
            "-u",
            user,
            "--",
            "sbatch",
            "--parsable",
            f"--account={account}",
            "--partition=cpu",
            "--time=1",
            f"--chdir={SHARED_TEST_ROOT}",
            "--output=/dev/null",
            *args,
        ],
        check=False,
    )


def reconcile(session_factory: sessionmaker[Session], runner: SubprocessCommandRunner, since: int) -> Any:
    return reconcile_usage(
        session_factory, runner, now=int(time.time()), since=since, lookback_s=0, initial_window_s=3600
    )


def records_of(session_factory: sessionmaker[Session], job_id_raw: str) -> list[UsageRecordRow]:
    with session_factory() as session:
        return list(session.scalars(select(UsageRecordRow).where(UsageRecordRow.job_id_raw == job_id_raw)))


def entries_of(session_factory: sessionmaker[Session], job_id_raw: str) -> int:
    with session_factory() as session:
        return int(
            session.scalar(
                select(func.count()).select_from(LedgerEntry).where(LedgerEntry.job_id_raw == job_id_raw)
            )
            or 0
        )


# --- the test --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scene:
    """Two tenants and a rate card in a fresh gateway, and what the test drives it with."""

    client: TestClient[Litestar]
    session_factory: sessionmaker[Session]
    runner: SubprocessCommandRunner
    config: GatewayConfig
    admin: str
    finance: str
    user_a: str
    user_b: str
    since: int


@dataclass(frozen=True)
class Workload:
    """The Slurm job ids the checks look at."""

    long_job: str
    cancelled: str
    requeued: str
    long_job_release: Path


@pytest.fixture
def scene(
    client: TestClient[Litestar],
    token_for: Any,
    session_factory: sessionmaker[Session],
    runner: SubprocessCommandRunner,
    accounting_config: GatewayConfig,
) -> Scene:
    SHARED_TEST_ROOT.mkdir(parents=True, exist_ok=True)
    since = int(time.time()) - 5
    admin = token_for("acct-admin", None, ["admin"])
    finance = token_for("acct-finance", None, ["finance"])
    create_tenant(client, admin, TENANT_A, {USER_A: USER_A})
    create_tenant(client, admin, TENANT_B, {USER_B: USER_B})
    card = {
        "effective_from": since - 3600,
        "currency": CURRENCY,
        "prices": PRICES,
        "qos_multipliers": QOS_MULTIPLIERS,
    }
    response = client.post("/v1/rate-cards", json=card, headers=bearer_headers(finance))
    assert response.status_code == 201, response.text
    return Scene(
        client=client,
        session_factory=session_factory,
        runner=runner,
        config=accounting_config,
        admin=admin,
        finance=finance,
        user_a=token_for(USER_A, TENANT_A, ["user"]),
        user_b=token_for(USER_B, TENANT_B, ["user"]),
        since=since,
    )


def run_workload(scene: Scene, release: Path) -> Workload:
    """Short jobs on both partitions, GPU jobs, an array, a cancelled job, a requeued one and a
    long one still running when this returns."""
    client, user_a, user_b = scene.client, scene.user_a, scene.user_b
    submit(client, user_a, command=["sleep", "2"])
    submit(client, user_a, partition="gpu", gpus_per_node=1, command=["sleep", "4"])
    submit(client, user_a, array="0-2", command=["sleep", "2"])
    submit(client, user_b, partition="gpu", gpus_per_node=2, cpus_per_task=2, command=["sleep", "3"])
    cancelled = submit(client, user_b, partition="gpu", gpus_per_node=1, command=["sleep", "60"])
    # The long job runs until the test releases it: a fixed sleep raced the requeue steps below,
    # which take 40 s on a loaded 2-core machine.
    wait_for_release = f"while [ ! -e {release} ]; do sleep 0.5; done"
    long_job = slurm_id(
        client, user_b, submit(client, user_b, command=["sh", "-c", wait_for_release], time_limit="10")
    )
    # The gateway submits with --no-requeue; a job sent straight to Slurm can be requeued.
    requeued = direct_sbatch(USER_A, TENANT_A, "--requeue", "--wrap=sleep 5")
    assert requeued.returncode == 0, requeued.stderr
    requeued_id = requeued.stdout.strip().split(";")[0]
    wait_running(requeued_id)
    time.sleep(2)
    run_command(["scontrol", "requeue", requeued_id])
    run_again_now(requeued_id)
    cancelled_id = slurm_id(client, user_b, cancelled)
    wait_running(cancelled_id)
    time.sleep(2)
    response = client.delete(f"/v1/jobs/{cancelled}", headers=bearer_headers(user_b))
    assert response.status_code in (200, 202, 204), response.text
    wait_running(long_job)
    return Workload(long_job=long_job, cancelled=cancelled_id, requeued=requeued_id, long_job_release=release)


def check_running_job_is_provisional(scene: Scene, workload: Workload) -> None:
    """While the long job runs: every final record posted and equal to the recomputation."""
    rows = wait_final(scene.since, except_jobs={workload.long_job})
    states = {row.job_id_raw: row.state for row in rows}
    assert states[workload.long_job] == "RUNNING"
    assert states[workload.cancelled] == "CANCELLED"
    assert sorted(row.state for row in rows if row.job_id_raw == workload.requeued) == [
        "COMPLETED",
        "REQUEUED",
    ]
    assert sum(row.partition == "gpu" for row in rows) >= 3
    report = reconcile(scene.session_factory, scene.runner, scene.since)
    assert report.entries_posted > 0
    [long_record] = records_of(scene.session_factory, workload.long_job)
    assert not long_record.is_final
    assert entries_of(scene.session_factory, workload.long_job) == 0
    assert len(records_of(scene.session_factory, workload.requeued)) == 2
    assert_ledger_matches(scene.session_factory, recompute(rows))


def check_admission_refuses_at_90_percent(scene: Scene) -> None:
    """Tenant B's GPU budget is 1 GPU-hour and it has used a few GPU-seconds: 4 GPUs for 14
    minutes project to ~93 % and are refused with the terms; for 12 minutes, ~80 %, admitted."""
    response = scene.client.put(
        f"/v1/tenants/{TENANT_B}/budget",
        json={"gpu_hours": "1", "amount": None},
        headers=bearer_headers(scene.admin),
    )
    assert response.status_code == 200, response.text
    job = {"name": "four-gpus", "command": ["true"], "partition": "gpu", "gpus_per_node": 4}
    response = scene.client.post(
        "/v1/jobs", json={**job, "time_limit": "14"}, headers=bearer_headers(scene.user_b)
    )
    assert response.status_code == 402, response.text
    problem = response.json()
    assert problem["type"].endswith(":budget-exceeded")
    assert problem["exceeded"] == ["gpu_hours"]
    assert problem["refusal_threshold"] == "0.9"
    assert Decimal("0.9") <= Decimal(problem["projected"]["fraction_of_budget"]) < 1
    terms = {term["name"]: term for term in problem["terms"]}
    assert {"posted", "running", "pending", "new_job"} <= set(terms)
    assert Decimal(terms["new_job"]["gpu_hours"]) == hours(4 * 14 * 60)
    assert Decimal(terms["posted"]["gpu_hours"]) > 0
    assert "time limit" in problem["detail"]
    response = scene.client.post(
        "/v1/jobs", json={**job, "time_limit": "12"}, headers=bearer_headers(scene.user_b)
    )
    assert response.status_code in (200, 201, 202), response.text


def check_ended_job_is_billed_and_csv_matches(scene: Scene, workload: Workload) -> None:
    """Once the long job ends it is posted; ledger and finance's CSV equal the recomputation."""
    workload.long_job_release.touch()
    rows = wait_final(scene.since, timeout_s=60)
    reconcile(scene.session_factory, scene.runner, scene.since)
    [long_record] = records_of(scene.session_factory, workload.long_job)
    assert long_record.is_final
    assert entries_of(scene.session_factory, workload.long_job) > 0
    expected = recompute(rows)
    assert_ledger_matches(scene.session_factory, expected)
    report_range = {
        "from": datetime.fromtimestamp(scene.since, UTC).date().isoformat(),
        "to": (datetime.now(UTC).date() + timedelta(days=1)).isoformat(),
        "group_by": "tenant,partition",
        "format": "csv",
    }
    response = scene.client.get(
        "/v1/reports/usage", params=report_range, headers=bearer_headers(scene.finance)
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    assert_csv_matches(response.text, expected)


def check_backstop_refuses_direct_sbatch(scene: Scene) -> None:
    """Tenant A's money budget is spent: once synced, Slurm itself refuses its direct sbatch."""
    assert direct_sbatch(USER_A, TENANT_A, "--wrap=true").returncode == 0
    response = scene.client.put(
        f"/v1/tenants/{TENANT_A}/budget",
        json={"gpu_hours": None, "amount": "0.01"},
        headers=bearer_headers(scene.admin),
    )
    assert response.status_code == 200, response.text
    sync_budget_backstop(scene.session_factory, scene.runner, now=int(time.time()))
    refused = direct_sbatch(USER_A, TENANT_A, "--wrap=true")
    assert refused.returncode != 0
    assert "AssocGrpSubmitJobsLimit" in refused.stderr, refused.stderr
    assert direct_sbatch(USER_B, TENANT_B, "--wrap=true").returncode == 0


@pytest.fixture
def long_job_release() -> Iterator[Path]:
    """The file whose creation ends the long job. Created at teardown too, so a failed test does
    not leave the job holding a CPU for its whole time limit; left behind, as it is empty."""
    release = SHARED_TEST_ROOT / f"acct-e2e-release-{uuid.uuid4().hex}"
    yield release
    release.touch()


@pytest.mark.usefixtures("unlocked_accounts")
def test_ledger_reports_admission_and_backstop_end_to_end(
    scene: Scene,
    long_job_release: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    workload = run_workload(scene, long_job_release)
    check_running_job_is_provisional(scene, workload)

    # A second pass over the same window, through the CLI and repricing, adds nothing.
    monkeypatch.setenv("SLURM_GATEWAY_DATABASE_URL", scene.config.database.url)
    monkeypatch.setenv("SLURM_GATEWAY_STATE_DIR", scene.config.state_dir)
    assert cli_main(["reconcile", "--since", datetime.fromtimestamp(scene.since, UTC).isoformat()]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (again["entries_posted"], again["reversals_posted"]) == (0, 0)

    check_admission_refuses_at_90_percent(scene)
    check_ended_job_is_billed_and_csv_matches(scene, workload)
    check_backstop_refuses_direct_sbatch(scene)
