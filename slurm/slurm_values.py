"""Decode the scalar values Slurm's client commands print (states, epoch times, placeholders),
and write the times they are given."""

from __future__ import annotations

import datetime

from slurm.errors import SlurmOutputError

# What squeue, sacct and sinfo print for "no value".
_PLACEHOLDERS = frozenset({"", "(null)", "None", "N/A", "Unknown", "None assigned"})


def base_state(state: str) -> str:
    """Slurm's base state word: "CANCELLED by 0" and "CANCELLED+" become "CANCELLED"."""
    words = state.split()
    if not words:
        raise SlurmOutputError("empty job state")
    return words[0].rstrip("+")


def epoch_or_none(value: str) -> int | None:
    """An epoch time printed under ``SLURM_TIME_FORMAT=%s``; None for Slurm's placeholders.

    Raises SlurmOutputError for anything else (e.g. a date printed without that setting).
    """
    if value in _PLACEHOLDERS or value == "0":
        return None
    if not value.isdigit():
        raise SlurmOutputError(f"expected an epoch time, got {value[:30]!r}")
    return int(value)


def text_or_none(value: str) -> str | None:
    """``value`` itself, or None for Slurm's placeholders of an absent value."""
    return None if value in _PLACEHOLDERS else value


def utc_time_argument(epoch: int) -> str:
    """``2026-11-01T12:00:00`` for a time option of sacct or sreport run under ``TZ=UTC``."""
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")
