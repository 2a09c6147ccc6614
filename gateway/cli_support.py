"""What every ``slurm-gateway`` subcommand shares: exit codes, error lines, the checked config."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from gateway.config import GatewayConfig, load_config
from gateway.database import normalized_database_url
from gateway.version import DISTRIBUTION_NAME

EXIT_OK = 0
EXIT_RUNTIME_ERROR = 1
# argparse's own code for bad arguments; bad configuration shares it.
EXIT_USAGE_ERROR = 2


def load_checked_config(path: Path | None) -> GatewayConfig:
    """The configuration from ``path`` and the environment, its database URL checked.

    Raises ConfigError; failing here gives a clear line rather than an error deep inside a command.
    """
    config = load_config(path, os.environ)
    normalized_database_url(config.database.url)
    return config


def print_error(message: str) -> None:
    """One ``slurm-gateway: <message>`` line on standard error."""
    print(f"{DISTRIBUTION_NAME}: {message}", file=sys.stderr)


def database_error_summary(exc: SQLAlchemyError) -> str:
    """The first line of the DBAPI's message (unreachable, auth, ...), without SQLAlchemy's noise."""
    cause = getattr(exc, "orig", None) or exc
    return str(cause).strip().splitlines()[0]
