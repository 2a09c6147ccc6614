"""reconcile_usage and the leader lease against the real cluster, on SQLite and PostgreSQL.

Jobs run as alice under a fresh account mapped to a tenant; the expected ledger is priced here
from an independent sacct read of the same window (parse_usage_records + price_usage).
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from operator import attrgetter
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from accounting.leader_lease import release_lease, try_acquire_lease
from accounting.ledger_models import LedgerEntry, RateCardRow, UsageRecordRow
from accounting.rate_cards import RateCard, rate_card_from_document
from accounting.usage_pricing import billable_interval, price_usage
from accounting.usage_reconciler import ReconcileReport, reconcile_usage
from gateway.database import create_database_engine
from gateway.schema_migrations import migrate_to_head
from gateway.storage_models import Tenant
from slurm.command_runner import SubprocessCommandRunner
from slurm.usage_records import USAGE_ENV_OVERRIDES, UsageRecord, parse_usage_records, usage_argv
from tests.integration.slurm_cluster import (
    SHARED_TEST_ROOT,
    ensure_account,
    run_command,
    submit_batch,
    wait_for_state,
)

pytestmark = [pytest.mark.integration, pytest.mark.slurm]

RUNNER = SubprocessCommandRunner(timeout_s=300)
LOOKBACK_S = 3600
INITIAL_WINDOW_S = 86400
FIRST_CARD = {
    "currency": "EUR",
    "prices": {"gpu": {"gpu": "2.50", "cpu": "0.01", "mem": "0.002", "node": "0.1"}, "*": {"cpu": "0.02"}},
}
RETROACTIVE_CARD = {
    "currency": "EUR",
    "prices": {"gpu": {"gpu": "3.75", "cpu": "0.01"}, "*": {"cpu": "0.05", "mem": "0.001"}},
    "qos_multipliers": {"*": "1.5"},
}


# What an entry and a priced segment have in common, for comparing the two.
ENTRY_SHAPE = attrgetter(
    "day",
    "usage_start",
    "usage_end",
    "cpu_seconds",
    "mem_mb_seconds",
    "gpu_seconds",
    "node_seconds",
    "amount_micros",
    "rate_card_id",
    "qos_multiplier",
)
AMOUNT = 7


class Cluster:
    """The module's Slurm account, its finished jobs and when they started being submitted."""

    def __init__(self, account: str, since: int, job_ids: list[str]) -> None:
        self.account = account
        self.since = since
        self.job_ids = job_ids


def submit_as_alice(account: str, partition: str, script: str, *extra: str) -> str:
    workdir = SHARED_TEST_ROOT / "usage_reconciler" / uuid.uuid4().hex
    workdir.mkdir(parents=True)
    workdir.chmod(0o777)
    return submit_batch(
        [
            "--uid=alice",
            "--gid=alice",
            f"--account={account}",
            f"--partition={partition}",
            "--time=2",
            f"--chdir={workdir}",
            "--output=/dev/null",
            *extra,
            "--wrap",
            script,
        ]
    )


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """A fresh account with alice, and a finished cpu job and a finished gpu job under it."""
    account = f"sgw_usage_{uuid.uuid4().hex[:8]}"
    ensure_account(account, ["alice"])
    since = int(time.time()) - 5
    job_ids = [
        submit_as_alice(account, "cpu", "sleep 2", "--cpus-per-task=2", "--mem=500M"),
        submit_as_alice(account, "gpu", "sleep 3", "--gres=gpu:1", "--mem=1000M"),
    ]
    for job_id in job_ids:
        assert wait_for_state(job_id, frozenset({"COMPLETED"}))["State"] == "COMPLETED"
    yield Cluster(account, since, job_ids)
    run_command(["sacctmgr", "--immediate", "remove", "user", "alice", f"account={account}"], check=False)
    run_command(["sacctmgr", "--immediate", "remove", "account", "where", f"name={account}"], check=False)


@pytest.fixture
def session_factory(database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = create_database_engine(database_url)
    migrate_to_head(engine)
    yield sessionmaker(engine)
    engine.dispose()


@pytest.fixture
def tenant(session_factory: sessionmaker[Session], cluster: Cluster) -> str:
    """The tenant of the module's account, and the first rate card (in force since 1970)."""
    now = datetime.now(UTC)
    with session_factory() as session:
        session.add(
            Tenant(
                id="acme",
                slurm_account=cluster.account,
                allowed_qos=["normal"],
                allowed_partitions=["cpu", "gpu"],
                created_at=now,
                updated_at=now,
            )
        )
        session.add(
            RateCardRow(effective_from=0, currency="EUR", document=FIRST_CARD, created_at=now, created_by="t")
        )
        session.commit()
    return "acme"


def reconcile(session_factory: sessionmaker[Session], cluster: Cluster, **kwargs: Any) -> ReconcileReport:
    return reconcile_usage(
        session_factory,
        RUNNER,
        now=int(time.time()),
        since=cluster.since,
        lookback_s=LOOKBACK_S,
        initial_window_s=INITIAL_WINDOW_S,
        **kwargs,
    )


def sacct_records(cluster: Cluster) -> dict[str, UsageRecord]:
    """The account's records read independently of the reconciler, by JobIDRaw."""
    text = RUNNER.run(usage_argv(cluster.since, int(time.time())), env={**os.environ, **USAGE_ENV_OVERRIDES})
    return {r.job_id_raw: r for r in parse_usage_records(text) if r.account == cluster.account}


def rate_cards(session_factory: sessionmaker[Session]) -> list[RateCard]:
    with session_factory() as session:
        rows = session.scalars(sa.select(RateCardRow)).all()
        return [rate_card_from_document(r.document, id=r.id, effective_from=r.effective_from) for r in rows]


def expected_entries(record: UsageRecord, cards: list[RateCard]) -> list[tuple[Any, ...]]:
    interval = billable_interval(record)
    assert interval is not None
    segments = price_usage(
        partition=record.partition,
        qos=record.qos,
        start=interval[0],
        end=interval[1],
        tres=record.alloc,
        cards=cards,
    )
    return [ENTRY_SHAPE(segment) for segment in segments]


def ledger(session_factory: sessionmaker[Session], account: str) -> list[LedgerEntry]:
    with session_factory() as session:
        return list(
            session.scalars(
                sa.select(LedgerEntry).where(LedgerEntry.account == account).order_by(LedgerEntry.id)
            )
        )


def entry_ids(entries: list[LedgerEntry]) -> list[int]:
    return [e.id for e in entries]


def live_entries(entries: list[LedgerEntry]) -> dict[str, list[tuple[Any, ...]]]:
    """Live usage entries (no reversal names them) by JobIDRaw, in the shape of expected_entries."""
    reversed_ids = {e.reverses_id for e in entries if e.reverses_id is not None}
    live: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for e in entries:
        if e.kind == "usage" and e.id not in reversed_ids:
            live[e.job_id_raw].append(ENTRY_SHAPE(e))
    return dict(live)


def net_amounts(entries: list[LedgerEntry]) -> dict[str, int]:
    totals: dict[str, int] = defaultdict(int)
    for e in entries:
        totals[e.job_id_raw] += e.amount_micros
    return dict(totals)


def test_entries_are_the_records_priced_and_a_second_pass_posts_nothing(
    session_factory: sessionmaker[Session], cluster: Cluster, tenant: str
) -> None:
    report = reconcile(session_factory, cluster)
    assert report.records_seen >= len(cluster.job_ids)
    assert report.reversals_posted == 0
    records = sacct_records(cluster)
    assert set(records) == set(cluster.job_ids)
    cards = rate_cards(session_factory)
    entries = ledger(session_factory, cluster.account)
    assert live_entries(entries) == {job_id: expected_entries(records[job_id], cards) for job_id in records}
    assert {(e.tenant_id, e.user, e.currency, e.kind) for e in entries} == {(tenant, "alice", "EUR", "usage")}
    gpu_entries = [e for e in entries if e.partition == "gpu"]
    assert gpu_entries and all(e.gpu_seconds > 0 and e.amount_micros > 0 for e in gpu_entries)
    with session_factory() as session:
        stored = session.scalars(
            sa.select(UsageRecordRow).where(UsageRecordRow.account == cluster.account)
        ).all()
    assert {(r.job_id_raw, r.tenant_id, r.is_final, r.state) for r in stored} == {
        (job_id, tenant, True, "COMPLETED") for job_id in cluster.job_ids
    }

    reconcile(session_factory, cluster)
    assert entry_ids(ledger(session_factory, cluster.account)) == entry_ids(entries)


def test_a_retroactive_rate_card_reverses_and_reposts_each_entry_once(
    session_factory: sessionmaker[Session], cluster: Cluster, tenant: str
) -> None:
    reconcile(session_factory, cluster)
    before = ledger(session_factory, cluster.account)
    with session_factory() as session:
        session.add(
            RateCardRow(
                effective_from=cluster.since - 3600,
                currency="EUR",
                document=RETROACTIVE_CARD,
                created_at=datetime.now(UTC),
                created_by="t",
            )
        )
        session.commit()
    # Unchanged records are not repriced by a plain pass...
    reconcile(session_factory, cluster)
    assert entry_ids(ledger(session_factory, cluster.account)) == entry_ids(before)
    # ...but are when asked for.
    reconcile(session_factory, cluster, reprice=True)
    after = ledger(session_factory, cluster.account)
    added = after[len(before) :]
    assert sorted((e.kind, e.reverses_id) for e in added if e.kind == "reversal") == sorted(
        ("reversal", e.id) for e in before
    )
    assert len([e for e in added if e.kind == "usage"]) == len(before)
    for reversal in (e for e in added if e.kind == "reversal"):
        original = next(e for e in before if e.id == reversal.reverses_id)
        assert (reversal.amount_micros, reversal.gpu_seconds, reversal.day) == (
            -original.amount_micros,
            -original.gpu_seconds,
            original.day,
        )
    records = sacct_records(cluster)
    cards = rate_cards(session_factory)
    expected = {job_id: expected_entries(records[job_id], cards) for job_id in records}
    assert live_entries(after) == expected
    assert net_amounts(after) == {job_id: sum(e[AMOUNT] for e in rows) for job_id, rows in expected.items()}
    assert {e.rate_card_id for e in added if e.kind == "usage"} == {max(c.id for c in cards if c.id)}
    # Repricing again finds everything right.
    reconcile(session_factory, cluster, reprice=True)
    assert entry_ids(ledger(session_factory, cluster.account)) == entry_ids(after)


def test_a_running_job_is_provisional_until_it_ends(
    session_factory: sessionmaker[Session], cluster: Cluster, tenant: str
) -> None:
    job_id = submit_as_alice(cluster.account, "cpu", "sleep 8")
    wait_for_state(job_id, frozenset({"RUNNING"}))
    reconcile(session_factory, cluster)
    with session_factory() as session:
        row = session.scalars(sa.select(UsageRecordRow).where(UsageRecordRow.job_id_raw == job_id)).one()
        assert (row.state, row.is_final, row.end_time, row.posted_digest) == ("RUNNING", False, None, None)
    assert job_id not in live_entries(ledger(session_factory, cluster.account))

    wait_for_state(job_id, frozenset({"COMPLETED"}))
    reconcile(session_factory, cluster)
    reconcile(session_factory, cluster)
    record = sacct_records(cluster)[job_id]
    entries = ledger(session_factory, cluster.account)
    assert live_entries(entries)[job_id] == expected_entries(record, rate_cards(session_factory))
    assert [e.kind for e in entries if e.job_id_raw == job_id] == ["usage"] * len(
        live_entries(entries)[job_id]
    )


def test_a_running_record_whose_end_falls_before_the_window_is_read_again_by_job_id(
    session_factory: sessionmaker[Session], cluster: Cluster, tenant: str
) -> None:
    job_id = submit_as_alice(cluster.account, "cpu", "sleep 8")
    wait_for_state(job_id, frozenset({"RUNNING"}))
    reconcile(session_factory, cluster)
    wait_for_state(job_id, frozenset({"COMPLETED"}))
    ended = sacct_records(cluster)[job_id].end_time
    assert ended is not None
    time.sleep(2)
    # As after a slurmdbd outage longer than the look-back: the window starts after the job's
    # end, so sacct's window no longer lists it.
    report = reconcile_usage(
        session_factory,
        RUNNER,
        now=int(time.time()),
        since=ended + 1,
        lookback_s=LOOKBACK_S,
        initial_window_s=INITIAL_WINDOW_S,
    )
    assert report.records_reread >= 1
    with session_factory() as session:
        row = session.scalars(sa.select(UsageRecordRow).where(UsageRecordRow.job_id_raw == job_id)).one()
        assert (row.state, row.is_final) == ("COMPLETED", True)
    record = sacct_records(cluster)[job_id]
    assert live_entries(ledger(session_factory, cluster.account))[job_id] == expected_entries(
        record, rate_cards(session_factory)
    )


def test_a_window_is_never_reconciled_past_now(
    session_factory: sessionmaker[Session], cluster: Cluster, tenant: str
) -> None:
    now = int(time.time())
    report = reconcile(session_factory, cluster, until=now + 86_400)
    assert report.window_end <= int(time.time())
    later = reconcile_usage(
        session_factory, RUNNER, now=int(time.time()), lookback_s=60, initial_window_s=INITIAL_WINDOW_S
    )
    assert later.window_start < later.window_end


def race(session_factory: sessionmaker[Session], since: int, **kwargs: Any) -> list[ReconcileReport]:
    """Two reconcile passes over the same window at once; their reports."""
    start = threading.Barrier(2)
    reports: list[ReconcileReport] = []
    errors: list[BaseException] = []

    def run() -> None:
        start.wait()
        try:
            reports.append(
                reconcile_usage(
                    session_factory,
                    RUNNER,
                    now=int(time.time()),
                    since=since,
                    lookback_s=LOOKBACK_S,
                    initial_window_s=INITIAL_WINDOW_S,
                    **kwargs,
                )
            )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert errors == []
    assert len(reports) == 2
    return reports


def assert_each_entry_posted_once(
    session_factory: sessionmaker[Session], reports: list[ReconcileReport]
) -> None:
    with session_factory() as session:
        reversed_twice = session.execute(
            sa.select(LedgerEntry.reverses_id)
            .where(LedgerEntry.reverses_id.is_not(None))
            .group_by(LedgerEntry.reverses_id)
            .having(sa.func.count() > 1)
        ).all()
        reversed_ids = sa.select(LedgerEntry.reverses_id).where(LedgerEntry.reverses_id.is_not(None))
        live_twice = session.execute(
            sa.select(LedgerEntry.record_id, LedgerEntry.usage_start)
            .where(LedgerEntry.kind == "usage", LedgerEntry.id.not_in(reversed_ids))
            .group_by(LedgerEntry.record_id, LedgerEntry.usage_start)
            .having(sa.func.count() > 1)
        ).all()
        reversals = session.scalar(sa.select(sa.func.count()).where(LedgerEntry.kind == "reversal"))
    assert (reversed_twice, live_twice) == ([], [])
    assert sum(r.reversals_posted for r in reports) == reversals


def test_racing_reconcilers_post_each_entry_once(
    session_factory: sessionmaker[Session], cluster: Cluster, tenant: str
) -> None:
    # A window with the whole cluster's recent jobs, so that both passes overlap for a while.
    since = cluster.since - 7 * 86400
    reports = race(session_factory, since)
    assert_each_entry_posted_once(session_factory, reports)
    with session_factory() as session:
        usage_entries = session.scalar(sa.select(sa.func.count()).where(LedgerEntry.kind == "usage"))
    assert sum(r.entries_posted for r in reports) == usage_entries
    assert sum(r.reversals_posted for r in reports) == 0

    with session_factory() as session:
        session.add(
            RateCardRow(
                effective_from=cluster.since - 3600,
                currency="EUR",
                document=RETROACTIVE_CARD,
                created_at=datetime.now(UTC),
                created_by="t",
            )
        )
        session.commit()
    reports = race(session_factory, since, reprice=True)
    assert_each_entry_posted_once(session_factory, reports)
    records = sacct_records(cluster)
    cards = rate_cards(session_factory)
    assert live_entries(ledger(session_factory, cluster.account)) == {
        job_id: expected_entries(record, cards) for job_id, record in records.items()
    }


def test_one_holder_leads_until_its_lease_expires_or_is_released(
    session_factory: sessionmaker[Session],
) -> None:
    now = datetime.now(UTC)
    assert try_acquire_lease(session_factory, "reconciler", "a", ttl_s=60, now=now)
    assert not try_acquire_lease(session_factory, "reconciler", "b", ttl_s=60, now=now)
    # The holder renews; the other still cannot take it before the renewed expiry.
    assert try_acquire_lease(session_factory, "reconciler", "a", ttl_s=60, now=now + timedelta(seconds=50))
    assert not try_acquire_lease(
        session_factory, "reconciler", "b", ttl_s=60, now=now + timedelta(seconds=100)
    )
    # Expired: the other process takes over, and the former holder is out.
    assert try_acquire_lease(session_factory, "reconciler", "b", ttl_s=60, now=now + timedelta(seconds=111))
    assert not try_acquire_lease(
        session_factory, "reconciler", "a", ttl_s=60, now=now + timedelta(seconds=112)
    )
    # Releasing someone else's lease does nothing; releasing one's own hands it over at once.
    release_lease(session_factory, "reconciler", "a")
    assert not try_acquire_lease(
        session_factory, "reconciler", "a", ttl_s=60, now=now + timedelta(seconds=113)
    )
    release_lease(session_factory, "reconciler", "b")
    assert try_acquire_lease(session_factory, "reconciler", "a", ttl_s=60, now=now + timedelta(seconds=114))


def test_exactly_one_of_many_concurrent_callers_gets_a_new_lease(
    session_factory: sessionmaker[Session],
) -> None:
    start = threading.Barrier(6)
    won: list[str] = []

    def contend(holder: str) -> None:
        start.wait()
        if try_acquire_lease(session_factory, "fresh", holder, ttl_s=60, now=datetime.now(UTC)):
            won.append(holder)

    threads = [threading.Thread(target=contend, args=(f"p{i}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(won) == 1
