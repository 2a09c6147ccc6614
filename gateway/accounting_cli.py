"""``slurm-gateway reconcile`` and ``slurm-gateway crosscheck``: accounting on demand.

``reconcile`` runs one reconciler pass. It does not wait for the leader lease, which a running
gateway renews for as long as it lives: a pass posts conditionally on what it read, so one run
by hand beside the gateway's loop still posts every entry once. ``crosscheck`` compares the
ledger's usage with ``sreport`` per hour or day and explains each difference.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime

import msgspec
from sqlalchemy.orm import Session, sessionmaker

from accounting.sreport_crosscheck import BUCKET_SECONDS, crosscheck, format_table, row_document
from accounting.usage_reconciler import reconcile_usage
from gateway.cli_support import EXIT_OK, EXIT_USAGE_ERROR, load_checked_config, print_error
from gateway.config import GatewayConfig
from gateway.database import create_database_engine
from gateway.slurm_driver import command_runner_from_config
from slurm.command_runner import CommandRunner

# sacct over a long --since window (months, 100k+ records) takes far longer than a status query.
SACCT_TIMEOUT_S = 3600.0

AddConfigOption = Callable[[argparse.ArgumentParser], None]


def add_accounting_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], add_config_option: AddConfigOption
) -> None:
    """Register ``reconcile`` and ``crosscheck`` on the top-level command parser."""
    reconcile = commands.add_parser(
        "reconcile", help="import sacct usage into the cost ledger now (one pass)"
    )
    add_config_option(reconcile)
    reconcile.add_argument(
        "--since",
        type=utc_epoch,
        metavar="DATE",
        help="re-read and re-price from this UTC date or time (2026-11-01 or 2026-11-01T12:00); "
        "default: from the last watermark minus accounting.lookback_s",
    )
    reconcile.add_argument(
        "--until", type=utc_epoch, metavar="DATE", help="end of the window with --since (default: now)"
    )
    reconcile.add_argument(
        "--no-reprice",
        dest="reprice",
        action="store_false",
        help="with --since: only read what changed in the window, leave posted prices alone "
        "(e.g. to catch up after a slurmdbd outage quickly)",
    )
    reconcile.set_defaults(handler=run_reconcile)

    check = commands.add_parser(
        "crosscheck", help="compare ledger usage with sreport and explain differences"
    )
    add_config_option(check)
    check.add_argument(
        "--from", dest="start", type=utc_epoch, required=True, metavar="DATE", help="UTC, inclusive"
    )
    check.add_argument(
        "--to", dest="end", type=utc_epoch, required=True, metavar="DATE", help="UTC, exclusive"
    )
    check.add_argument("--bucket", choices=sorted(BUCKET_SECONDS), default="hour", help="default: hour")
    check.add_argument("--json", action="store_true", help="one JSON document instead of a table")
    check.set_defaults(handler=run_crosscheck)


def utc_epoch(text: str) -> int:
    """Epoch seconds of a UTC date (``2026-11-01``) or date-time (``2026-11-01T12:00[:00][Z]``).

    A time without an offset is UTC; one with an offset is converted.
    """
    try:
        if len(text) == 10:
            moment = datetime.combine(date.fromisoformat(text), datetime.min.time())
        else:
            moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a date or date-time: {text!r} (use 2026-11-01 or 2026-11-01T12:00:00Z)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


def run_reconcile(args: argparse.Namespace) -> int:
    """One reconciler pass; prints its report as one JSON line."""
    if args.until is not None and args.since is None:
        return _usage_error("--until needs --since")
    if args.since is not None and args.until is not None and args.since >= args.until:
        return _usage_error("--since must be before --until")
    now = int(time.time())
    if (args.until or 0) > now or (args.since or 0) >= now:
        return _usage_error("--since and --until must not be in the future (the ledger holds what ran)")
    if not args.reprice and args.since is None:
        return _usage_error("--no-reprice needs --since (a pass without it never reprices)")
    config = load_checked_config(args.config)
    accounting = config.accounting
    with _session_factory(config) as session_factory:
        runner = _reconcile_runner(config)
        report = reconcile_usage(
            session_factory,
            runner,
            now=now,
            since=args.since,
            until=args.until,
            lookback_s=accounting.lookback_s,
            initial_window_s=accounting.initial_window_s,
            reprice=args.since is not None and args.reprice,
        )
    print(json.dumps(dataclasses.asdict(report), sort_keys=True))
    return EXIT_OK


def run_crosscheck(args: argparse.Namespace) -> int:
    """Compare ledger usage with sreport; prints a table, or JSON with --json."""
    if args.start >= args.end:
        return _usage_error("--from must be before --to")
    config = load_checked_config(args.config)
    with _session_factory(config) as session_factory:
        rows = crosscheck(
            session_factory,
            command_runner_from_config(config.slurm),
            start=args.start,
            end=args.end,
            bucket=args.bucket,
            now=int(time.time()),
        )
    if args.json:
        print(json.dumps({"bucket": args.bucket, "rows": [row_document(row) for row in rows]}))
    else:
        print(format_table(rows))
    return EXIT_OK


@contextmanager
def _session_factory(config: GatewayConfig) -> Iterator[sessionmaker[Session]]:
    engine = create_database_engine(config.database.url)
    try:
        yield sessionmaker(engine, expire_on_commit=False)
    finally:
        engine.dispose()


def _reconcile_runner(config: GatewayConfig) -> CommandRunner:
    timeout_s = max(config.slurm.command_timeout_s, SACCT_TIMEOUT_S)
    return command_runner_from_config(msgspec.structs.replace(config.slurm, command_timeout_s=timeout_s))


def _usage_error(message: str) -> int:
    print_error(message)
    return EXIT_USAGE_ERROR
