"""``slurm-gateway`` command line: serve, migrate, token, check-config, reconcile, crosscheck, version."""

from __future__ import annotations

import argparse
import gc
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import get_args

import msgspec
import uvicorn
from sqlalchemy.exc import SQLAlchemyError

from gateway.accounting_cli import add_accounting_commands
from gateway.app import create_app
from gateway.cli_support import (
    EXIT_OK,
    EXIT_RUNTIME_ERROR,
    EXIT_USAGE_ERROR,
    database_error_summary,
    load_checked_config,
    print_error,
)
from gateway.config import ConfigError, GatewayConfig, config_as_json
from gateway.database import create_database_engine, normalized_database_url, redacted_database_url
from gateway.hs256_secret import ensure_hs256_secret, hs256_secret_path
from gateway.principal import Role
from gateway.schema_migrations import current_revision, head_revision, migrate_to_head
from gateway.token_minting import mint_token
from gateway.version import DISTRIBUTION_NAME, package_version

EXIT_CONFIG_ERROR = EXIT_USAGE_ERROR
# Allocations between young garbage collections while serving (CPython's default: 700).
GC_YOUNG_THRESHOLD = 10_000


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return the process exit code."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except ConfigError as exc:
        print_error(f"config error: {exc}")
        return EXIT_CONFIG_ERROR
    except OSError as exc:
        print_error(str(exc))
        return EXIT_RUNTIME_ERROR


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=DISTRIBUTION_NAME, description="HTTP gateway for a Slurm cluster.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the HTTP server")
    _add_config_option(serve)
    serve.add_argument("--host", help="listen address (overrides server.host)")
    serve.add_argument("--port", type=_port_number, help="listen port (overrides server.port)")
    serve.set_defaults(handler=_serve)

    migrate = commands.add_parser("migrate", help="create or upgrade the database schema (run before serve)")
    _add_config_option(migrate)
    migrate.add_argument(
        "--status",
        action="store_true",
        help="change nothing: print the database's revision and the code's head as JSON",
    )
    migrate.set_defaults(handler=_migrate)

    token = commands.add_parser("token", help="print a bearer token signed with the configured HS256 secret")
    _add_config_option(token)
    token.add_argument("--user", required=True, help="the token's subject (gateway user name)")
    token.add_argument("--tenant", help="tenant id; required for the user and tenant-admin roles")
    token.add_argument(
        "--role", dest="roles", action="append", required=True, choices=get_args(Role), help="repeatable"
    )
    token.add_argument("--ttl", type=_positive_seconds, default=3600, metavar="SECONDS", help="default 3600")
    token.set_defaults(handler=_print_token)

    check = commands.add_parser("check-config", help="validate the configuration and print it as JSON")
    _add_config_option(check)
    check.set_defaults(handler=_check_config)

    add_accounting_commands(commands, _add_config_option)

    version = commands.add_parser("version", help="print the version")
    version.set_defaults(handler=_print_version)
    return parser


def _add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        metavar="PATH",
        help="TOML config file; SLURM_GATEWAY_* environment variables override it",
    )


def _port_number(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {value!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"not a TCP port (1-65535): {port}")
    return port


def _positive_seconds(value: str) -> int:
    try:
        seconds = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {value!r}") from None
    if seconds < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 second: {seconds}")
    return seconds


def _serve(args: argparse.Namespace) -> int:
    config = load_checked_config(args.config)
    server = msgspec.structs.replace(
        config.server,
        host=args.host if args.host is not None else config.server.host,
        port=args.port if args.port is not None else config.server.port,
    )
    config = msgspec.structs.replace(config, server=server)
    Path(config.state_dir).mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(config)
    # Everything imported and built so far lives as long as the process: leave it out of
    # garbage collection, whose full passes over it otherwise stall every request (~90 ms).
    gc.freeze()
    # Young collections scan what is alive at that moment (the requests in flight): fewer of
    # them, each no longer, cut GC time under load ~3x. Cyclic garbage still goes in ms.
    gc.set_threshold(GC_YOUNG_THRESHOLD)
    uvicorn.run(
        app,
        host=server.host,
        port=server.port,
        access_log=server.access_log,
        # httptools parses HTTP several times faster than h11. The stock asyncio loop, not
        # uvloop: under 500 keep-alive clients uvloop starves some connections for seconds
        # (p99 1.5 s vs 32 ms for the same hello-world app here).
        http="httptools",
        loop="asyncio",
    )
    return EXIT_OK


def _migrate(args: argparse.Namespace) -> int:
    config = load_checked_config(args.config)
    if args.status:
        return _print_schema_status(config)
    Path(config.state_dir).mkdir(parents=True, exist_ok=True)
    engine = create_database_engine(config.database.url)
    try:
        migrate_to_head(engine)
        revision = current_revision(engine)
    except SQLAlchemyError as exc:
        print_error(f"migration failed: {database_error_summary(exc)}")
        return EXIT_RUNTIME_ERROR
    finally:
        engine.dispose()
    print(f"database {redacted_database_url(config.database.url)} at revision {revision}")
    return EXIT_OK


def _print_schema_status(config: GatewayConfig) -> int:
    # Deployment tools report a migration only when the schema is behind; reading must not
    # create a SQLite database that does not exist yet.
    url = normalized_database_url(config.database.url)
    sqlite_file = url.database if url.get_backend_name() == "sqlite" else None
    current = None
    if not sqlite_file or Path(sqlite_file).exists():
        engine = create_database_engine(config.database.url)
        try:
            current = current_revision(engine)
        except SQLAlchemyError as exc:
            print_error(f"reading the schema revision failed: {database_error_summary(exc)}")
            return EXIT_RUNTIME_ERROR
        finally:
            engine.dispose()
    print(json.dumps({"current": current, "head": head_revision()}))
    return EXIT_OK


def _print_token(args: argparse.Namespace) -> int:
    config = load_checked_config(args.config)
    if config.auth.algorithm != "HS256":
        raise ConfigError(
            "auth.algorithm is RS256: tokens come from your identity provider, not this command"
        )
    tenant_scoped = {"user", "tenant-admin"} & set(args.roles)
    if tenant_scoped and args.tenant is None:
        print_error(f"--tenant is required for the {' and '.join(sorted(tenant_scoped))} role")
        return EXIT_CONFIG_ERROR
    secret = ensure_hs256_secret(hs256_secret_path(config))
    print(
        mint_token(config.auth, secret, user=args.user, tenant=args.tenant, roles=args.roles, ttl_s=args.ttl)
    )
    return EXIT_OK


def _check_config(args: argparse.Namespace) -> int:
    config = load_checked_config(args.config)
    database = msgspec.structs.replace(config.database, url=redacted_database_url(config.database.url))
    print(config_as_json(msgspec.structs.replace(config, database=database)))
    return EXIT_OK


def _print_version(args: argparse.Namespace) -> int:
    print(f"{DISTRIBUTION_NAME} {package_version()}")
    return EXIT_OK
