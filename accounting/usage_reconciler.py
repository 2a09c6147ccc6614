"""Import sacct's job records into usage_records and post their cost to the ledger.

One pass reads one window of sacct (``--duplicates --allocations``, UTC epoch times) and, in
batches:

- upserts each record by its identity (cluster, JobIDRaw, Submit), skipping records whose
  content is unchanged since the last pass; records of jobs still pending or running are stored
  as provisional (is_final false) and re-read by every pass until they end;
- prices each final record's billable interval against the rate cards and, when the result
  differs from what the ledger holds for it (``posted_digest``), posts a reversal of the
  record's live entries and the new entries: the ledger is never edited in place.

Posting is conditional on ``posted_digest`` still being the value read, so two reconcilers
racing over the same records post each entry once (the loser retries the batch and finds
nothing left to do). A second pass over the same window therefore posts nothing. The window
starts a look-back before the cursor, so records that reach slurmdbd late are still read.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import islice
from typing import Any, TypeVar

from sqlalchemy import Row, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from accounting.ledger_models import AccountingCursor, LedgerEntry, RateCardRow, UsageRecordRow
from accounting.rate_cards import RateCard, rate_card_from_document
from accounting.usage_pricing import PricedSegment, billable_interval, price_usage, segments_digest
from gateway.storage_models import Tenant
from slurm.command_runner import CommandRunner
from slurm.errors import SlurmOutputError
from slurm.usage_records import (
    USAGE_ENV_OVERRIDES,
    TresCounts,
    UsageLine,
    UsageRecord,
    iter_usage_lines,
    usage_argv,
    usage_argv_for_jobs,
)

logger = logging.getLogger(__name__)

SACCT_SOURCE = "sacct"
# Job ids per sacct --jobs call when records that left the window are read again.
REREAD_JOBS_PER_CALL = 500
# Records per transaction: large enough that per-statement overhead vanishes, small enough that a
# batch retried after a race is cheap and a transaction holds few locks.
BATCH_SIZE = 5000
# A batch is retried when another reconciler wrote some of its records meanwhile; it then finds
# them done, so more than a couple of tries means something else is wrong.
MAX_BATCH_TRIES = 5

USAGE = "usage"
_Item = TypeVar("_Item")
REVERSAL = "reversal"

_records = UsageRecordRow.__table__
_entries = LedgerEntry.__table__
_cursors = AccountingCursor.__table__
_tenants = Tenant.__table__

# What each ledger entry copies from its record; a change reposts the record.
_ATTRIBUTION_COLUMNS = ("tenant_id", "account", "user", "partition", "qos", "job_id")
# Quantities a reversal negates.
_SIGNED_COLUMNS = ("cpu_seconds", "mem_mb_seconds", "gpu_seconds", "node_seconds", "amount_micros")


@dataclass(frozen=True, slots=True)
class ReconcileReport:
    """What one pass did; ``sacct_seconds`` is the sacct call alone, ``total_seconds`` the whole pass."""

    window_start: int
    window_end: int
    records_seen: int
    records_changed: int
    entries_posted: int
    reversals_posted: int
    # Records stored as pending or running that the window no longer lists (their end reached
    # slurmdbd after the window's start), read again by job id.
    records_reread: int
    # Lines that could not be read, left out (and logged) so that one cannot stop all billing.
    records_unreadable: int
    sacct_seconds: float
    total_seconds: float


@dataclass(frozen=True, slots=True)
class _PassContext:
    tenant_by_account: Mapping[str, str]
    cards: Sequence[RateCard]
    currency_by_card: Mapping[int, str]
    reprice: bool


@dataclass(slots=True)
class _Counts:
    records_seen: int = 0
    records_changed: int = 0
    entries_posted: int = 0
    reversals_posted: int = 0
    records_unreadable: int = 0

    def add(self, other: _Counts) -> None:
        self.records_seen += other.records_seen
        self.records_changed += other.records_changed
        self.entries_posted += other.entries_posted
        self.reversals_posted += other.reversals_posted
        self.records_unreadable += other.records_unreadable


class _StaleBatch(Exception):
    """Another reconciler wrote some of this batch's records after this one read them."""


def reconcile_usage(
    session_factory: sessionmaker[Session],
    runner: CommandRunner,
    *,
    now: int,
    since: int | None = None,
    until: int | None = None,
    lookback_s: int,
    initial_window_s: int,
    reprice: bool = False,
) -> ReconcileReport:
    """Reconcile one window of sacct into usage_records and the ledger; idempotent.

    The window is [since, until or now] when ``since`` is given, else [cursor - lookback_s, now]
    (no cursor yet: [now - initial_window_s, now]). ``reprice`` re-derives the entries of every
    final record in the window even when sacct reports it unchanged: that is how a retroactive
    rate card or a pricing fix reaches the ledger. The cursor moves to the window's end (never
    back). Raises SlurmUnavailable when sacct fails; batches committed before stay committed.
    """
    started = time.perf_counter()
    window_start, window_end = _window(
        session_factory,
        now=now,
        since=since,
        until=until,
        lookback_s=lookback_s,
        initial_window_s=initial_window_s,
    )
    env = {**os.environ, **USAGE_ENV_OVERRIDES}
    text = runner.run(usage_argv(window_start, window_end), env=env)
    sacct_seconds = time.perf_counter() - started
    context = _pass_context(session_factory, reprice=reprice)
    counts = _Counts()
    seen: set[tuple[str, str, int]] = set()
    for batch in _batches(iter_usage_lines(text.splitlines()), BATCH_SIZE):
        seen.update(line.identity for line in batch)
        counts.add(_reconcile_batch(session_factory, batch, context))
    missing = _provisional_job_ids(session_factory, seen)
    for chunk in _batches(missing, REREAD_JOBS_PER_CALL):
        reread = runner.run(usage_argv_for_jobs(chunk), env=env)
        for batch in _batches(iter_usage_lines(reread.splitlines()), BATCH_SIZE):
            counts.add(_reconcile_batch(session_factory, batch, context))
    _advance_cursor(session_factory, window_end)
    return ReconcileReport(
        window_start=window_start,
        window_end=window_end,
        records_seen=counts.records_seen,
        records_changed=counts.records_changed,
        entries_posted=counts.entries_posted,
        reversals_posted=counts.reversals_posted,
        records_reread=len(missing),
        records_unreadable=counts.records_unreadable,
        sacct_seconds=sacct_seconds,
        total_seconds=time.perf_counter() - started,
    )


def _window(
    session_factory: sessionmaker[Session],
    *,
    now: int,
    since: int | None,
    until: int | None,
    lookback_s: int,
    initial_window_s: int,
) -> tuple[int, int]:
    # Never past now: the cursor would move into the future and later windows would be empty.
    end = min(until, now) if until is not None else now
    if since is not None:
        return since, end
    with session_factory() as session:
        cursor = session.scalar(select(_cursors.c.reconciled_until).where(_cursors.c.source == SACCT_SOURCE))
    start = now - initial_window_s if cursor is None else min(cursor - lookback_s, end)
    return start, end


def _provisional_job_ids(
    session_factory: sessionmaker[Session], seen: Collection[tuple[str, str, int]]
) -> list[str]:
    """Raw ids of stored pending or running records this pass's window did not list.

    sacct selects jobs whose end is after the window's start: a job whose end reached slurmdbd
    late (an outage longer than the look-back) falls out of every later window while the
    ledger still holds it as running.
    """
    with session_factory() as session:
        rows = session.execute(
            select(_records.c.cluster, _records.c.job_id_raw, _records.c.submit_time).where(
                _records.c.is_final.is_(False)
            )
        )
        return sorted({row.job_id_raw for row in rows if tuple(row) not in seen})


def _pass_context(session_factory: sessionmaker[Session], *, reprice: bool) -> _PassContext:
    with session_factory() as session:
        tenant_by_account = {
            account: tenant_id
            for account, tenant_id in session.execute(select(_tenants.c.slurm_account, _tenants.c.id))
        }
        cards = [
            rate_card_from_document(row.document, id=row.id, effective_from=row.effective_from)
            for row in session.execute(
                select(RateCardRow.id, RateCardRow.effective_from, RateCardRow.document).order_by(
                    RateCardRow.effective_from
                )
            )
        ]
    return _PassContext(
        tenant_by_account=tenant_by_account,
        cards=cards,
        currency_by_card={card.id: card.currency for card in cards if card.id is not None},
        reprice=reprice,
    )


def _batches(items: Iterable[_Item], size: int) -> Iterator[list[_Item]]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


def _reconcile_batch(
    session_factory: sessionmaker[Session], batch: Sequence[UsageLine], context: _PassContext
) -> _Counts:
    for _ in range(MAX_BATCH_TRIES - 1):
        try:
            return _try_batch(session_factory, batch, context)
        except _StaleBatch:
            continue
    return _try_batch(session_factory, batch, context)


@dataclass(slots=True)
class _Posting:
    """A final record whose ledger entries must become ``segments``."""

    identity: tuple[str, str, int]
    values: dict[str, Any]
    segments: list[PricedSegment]
    record_id: int | None  # None: the record is inserted in this batch
    reverses_live: bool  # the record has entries posted before


def _try_batch(
    session_factory: sessionmaker[Session], batch: Sequence[UsageLine], context: _PassContext
) -> _Counts:
    # The last occurrence of an identity wins (sacct never repeats one; this keeps executemany
    # safe). Sorted, so that racing reconcilers lock rows in the same order and never deadlock.
    lines = dict(sorted(((line.identity, line) for line in batch), key=lambda pair: pair[0]))
    now = datetime.now(UTC)
    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    postings: list[_Posting] = []
    unreadable = 0
    with session_factory() as session:
        existing = _existing_records(session, lines)
        for identity, line in lines.items():
            tenant_id = context.tenant_by_account.get(line.account)
            content_digest = _content_digest(line, tenant_id)
            row = existing.get(identity)
            changed = row is None or row.content_digest != content_digest
            if not changed and not context.reprice:
                # The same line as last time: nothing to parse, write or post.
                continue
            try:
                record = line.record()
            except SlurmOutputError as exc:
                logger.error("accounting: sacct record %s left out: %s", "/".join(map(str, identity)), exc)
                unreadable += 1
                continue
            values = _record_values(record, tenant_id)
            posted_digest = row.posted_digest if row is not None else None
            new_posted_digest = posted_digest
            if record.is_final and (changed or context.reprice):
                segments = _price(record, context.cards)
                desired = _posting_digest(values, segments)
                # A record with no billable usage and nothing posted has nothing to correct.
                if desired != posted_digest and (segments or posted_digest is not None):
                    new_posted_digest = desired
                    postings.append(
                        _Posting(
                            identity=identity,
                            values=values,
                            segments=segments,
                            record_id=row.id if row is not None else None,
                            reverses_live=posted_digest is not None,
                        )
                    )
            if row is None:
                inserts.append(
                    {
                        **values,
                        "content_digest": content_digest,
                        "posted_digest": new_posted_digest,
                        "first_seen_at": now,
                        "updated_at": now,
                    }
                )
            elif changed or new_posted_digest != posted_digest:
                updates.append(
                    {
                        **values,
                        "content_digest": content_digest,
                        "posted_digest": new_posted_digest,
                        "updated_at": now,
                        "b_id": row.id,
                        "b_content_digest": row.content_digest,
                        "b_posted_digest": posted_digest,
                    }
                )
        try:
            new_ids = _insert_records(session, inserts)
        except IntegrityError as exc:
            session.rollback()
            raise _StaleBatch from exc
        _update_records(session, updates)
        reversals = _reversals(session, [p.record_id for p in postings if p.reverses_live], now)
        entries = [
            _entry(posting.values, posting.record_id or new_ids[posting.identity], segment, context, now)
            for posting in postings
            for segment in posting.segments
        ]
        if reversals:
            session.execute(insert(_entries), reversals)
        if entries:
            session.execute(insert(_entries), entries)
        session.commit()
    return _Counts(
        records_seen=len(batch),
        records_changed=len(inserts) + len(updates),
        entries_posted=len(entries),
        reversals_posted=len(reversals),
        records_unreadable=unreadable,
    )


def _existing_records(
    session: Session, records: Collection[tuple[str, str, int]]
) -> dict[tuple[str, str, int], Row[Any]]:
    # One query per batch; selecting by job_id_raw alone keeps the parameter list short, and the
    # few rows of other clusters or submit times that share a raw id are dropped here.
    job_ids = sorted({job_id_raw for _, job_id_raw, _ in records})
    rows = session.execute(
        select(
            _records.c.id,
            _records.c.cluster,
            _records.c.job_id_raw,
            _records.c.submit_time,
            _records.c.content_digest,
            _records.c.posted_digest,
        ).where(_records.c.job_id_raw.in_(job_ids))
    )
    found = {}
    for row in rows:
        identity = (row.cluster, row.job_id_raw, row.submit_time)
        if identity in records:
            found[identity] = row
    return found


def _record_values(record: UsageRecord, tenant_id: str | None) -> dict[str, Any]:
    tres = record.alloc if record.alloc != TresCounts() else record.requested
    return {
        "cluster": record.cluster,
        "job_id_raw": record.job_id_raw,
        "submit_time": record.submit_time,
        "job_id": record.job_id,
        "account": record.account,
        "tenant_id": tenant_id,
        "user": record.user,
        "partition": record.partition,
        "qos": record.qos,
        "state": record.state,
        "start_time": record.start_time,
        "end_time": record.end_time,
        "elapsed_s": record.elapsed_s,
        "time_limit_s": record.time_limit_s,
        "node_count": record.node_count,
        "tasks": record.tasks,
        "cpu": tres.cpu,
        "mem_mb": tres.mem_mb,
        "gpu": tres.gpu,
        "node": tres.node,
        "is_final": record.is_final,
    }


def _content_digest(line: UsageLine, tenant_id: str | None) -> str:
    # Every stored value comes from the line or the account's tenant; the unit separator never
    # occurs in sacct's parsable fields, so the encoding is unambiguous.
    return hashlib.sha256(f"{tenant_id or ''}\x1f{line.text}".encode()).hexdigest()


def _posting_digest(values: Mapping[str, Any], segments: Sequence[PricedSegment]) -> str:
    # Entries carry the record's attribution as well as its figures: a record that moves to
    # another tenant (its account was mapped after it ran) or user must be reposted too.
    attribution = "\x1f".join(repr(values[column]) for column in _ATTRIBUTION_COLUMNS)
    return hashlib.sha256(f"{attribution}\x1e{segments_digest(segments)}".encode()).hexdigest()


def _price(record: UsageRecord, cards: Sequence[RateCard]) -> list[PricedSegment]:
    interval = billable_interval(record)
    if interval is None:
        return []
    start, end = interval
    return price_usage(
        partition=record.partition, qos=record.qos, start=start, end=end, tres=record.alloc, cards=cards
    )


def _insert_records(session: Session, inserts: list[dict[str, Any]]) -> dict[tuple[str, str, int], int]:
    """Insert new records; return their ids by identity."""
    if not inserts:
        return {}
    # A plain executemany (no RETURNING): psycopg then sends one prepared statement in a
    # pipeline, where a multi-row VALUES with RETURNING costs more to build than to run.
    session.execute(insert(_records), inserts)
    identities = {(row["cluster"], row["job_id_raw"], row["submit_time"]) for row in inserts}
    return {identity: row.id for identity, row in _existing_records(session, identities).items()}


def _update_records(session: Session, updates: list[dict[str, Any]]) -> None:
    if not updates:
        return
    # Conditional on what was read: a record another reconciler changed (or posted) since is
    # not overwritten; the whole batch is redone instead.
    posted_digest = _records.c.posted_digest
    statement = update(_records).where(
        _records.c.id == bindparam("b_id"),
        _records.c.content_digest == bindparam("b_content_digest"),
        posted_digest.is_not_distinct_from(bindparam("b_posted_digest", type_=posted_digest.type)),
    )
    result = session.execute(statement, updates)
    if result.rowcount != len(updates):
        session.rollback()
        raise _StaleBatch


def _reversals(session: Session, record_ids: Sequence[int | None], now: datetime) -> list[dict[str, Any]]:
    """Negated copies of the live entries of ``record_ids`` (usage entries no reversal names)."""
    if not record_ids:
        return []
    rows = session.execute(select(_entries).where(_entries.c.record_id.in_(record_ids))).mappings().all()
    reversed_ids = {row["reverses_id"] for row in rows if row["reverses_id"] is not None}
    reversals = []
    for row in rows:
        if row["kind"] != USAGE or row["id"] in reversed_ids:
            continue
        reversal = {key: value for key, value in row.items() if key != "id"}
        for column in _SIGNED_COLUMNS:
            reversal[column] = -row[column]
        reversal.update(kind=REVERSAL, reverses_id=row["id"], posted_at=now)
        reversals.append(reversal)
    return reversals


def _entry(
    values: Mapping[str, Any], record_id: int, segment: PricedSegment, context: _PassContext, now: datetime
) -> dict[str, Any]:
    return {
        "record_id": record_id,
        "tenant_id": values["tenant_id"],
        "account": values["account"],
        "user": values["user"],
        "partition": values["partition"],
        "qos": values["qos"],
        "cluster": values["cluster"],
        "job_id_raw": values["job_id_raw"],
        "job_id": values["job_id"],
        "submit_time": values["submit_time"],
        "day": segment.day,
        "period": segment.period,
        "usage_start": segment.usage_start,
        "usage_end": segment.usage_end,
        "cpu_seconds": segment.cpu_seconds,
        "mem_mb_seconds": segment.mem_mb_seconds,
        "gpu_seconds": segment.gpu_seconds,
        "node_seconds": segment.node_seconds,
        "amount_micros": segment.amount_micros,
        "rate_card_id": segment.rate_card_id,
        "qos_multiplier": segment.qos_multiplier,
        "currency": context.currency_by_card.get(segment.rate_card_id) if segment.rate_card_id else None,
        "kind": USAGE,
        "reverses_id": None,
        "posted_at": now,
    }


def _advance_cursor(session_factory: sessionmaker[Session], until: int) -> None:
    now = datetime.now(UTC)
    with session_factory() as session:
        moved = session.execute(
            update(_cursors)
            .where(_cursors.c.source == SACCT_SOURCE, _cursors.c.reconciled_until < until)
            .values(reconciled_until=until, updated_at=now)
        )
        if moved.rowcount == 0 and session.get(AccountingCursor, SACCT_SOURCE) is None:
            try:
                session.execute(
                    insert(_cursors).values(source=SACCT_SOURCE, reconciled_until=until, updated_at=now)
                )
            except IntegrityError:
                # Another pass created it just now; its window end is as good as ours.
                session.rollback()
                return
        session.commit()
