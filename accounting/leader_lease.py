"""A leader lease in the database: of all gateway processes, one at a time runs a singleton task.

The holder renews the lease before it expires; a crashed holder's lease simply runs out and the
next process to ask takes it over. Each attempt is one conditional statement, so the database
decides the race: exactly one of several concurrent callers gets the lease.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, insert, or_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from accounting.ledger_models import LeaderLease

ACCOUNTING_LEASE = "accounting-reconciler"

_leases = LeaderLease.__table__


def try_acquire_lease(
    session_factory: sessionmaker[Session], name: str, holder: str, *, ttl_s: float, now: datetime
) -> bool:
    """Take or renew lease ``name`` for ``holder`` until ``now + ttl_s``; True when ``holder`` has it.

    Renewal and takeover of an expired lease are one UPDATE conditional on (holder is us, or the
    lease expired); a lease that does not exist yet is INSERTed, and losing that race to another
    process (primary-key conflict) means the other process holds it.
    """
    # SQLite keeps timestamps as UTC wall time: compare in UTC on both databases.
    now = now.astimezone(UTC)
    expires_at = now + timedelta(seconds=ttl_s)
    with session_factory() as session:
        renewed = session.execute(
            update(_leases)
            .where(_leases.c.name == name, or_(_leases.c.holder == holder, _leases.c.expires_at < now))
            .values(holder=holder, expires_at=expires_at)
        )
        if renewed.rowcount == 1:
            session.commit()
            return True
        if session.get(LeaderLease, name) is not None:
            # Someone else holds a lease that has not expired.
            session.rollback()
            return False
        try:
            session.execute(insert(_leases).values(name=name, holder=holder, expires_at=expires_at))
            session.commit()
        except IntegrityError:
            session.rollback()
            return False
        return True


def release_lease(session_factory: sessionmaker[Session], name: str, holder: str) -> None:
    """Give lease ``name`` up if ``holder`` holds it, so another process need not wait for expiry."""
    with session_factory() as session:
        session.execute(delete(_leases).where(_leases.c.name == name, _leases.c.holder == holder))
        session.commit()
