"""Slurm time limits: parse every format ``sbatch --time`` accepts, format for #SBATCH --time.

Slurm's formats are "M", "M:S", "H:M:S", "D-H", "D-H:M" and "D-H:M:S". Like Slurm
(``time_str2mins`` in src/common/parse_time.c) components are not range-checked ("1:90:00" is
2 h 30 min) and seconds round UP to the next whole minute. Gateway jobs must always have a
finite limit, so UNLIMITED/INFINITE/-1 and zero (which Slurm also reads as "no limit") are
rejected rather than passed through.
"""

from __future__ import annotations

import re

from slurm.errors import JobSpecError

# One year: far beyond any partition's MaxTime, far below Slurm's 32-bit second counters.
MAX_TIME_LIMIT_MINUTES = 366 * 24 * 60

_FIELD = "time_limit"
_HOW_TO = 'use minutes ("90"), "HH:MM:SS" ("01:30:00") or "D-HH:MM:SS" ("2-00:00:00")'
# Longest sensible spelling is "366-00:00:00"; more digits than this can only be overflow.
_MAX_TEXT_LENGTH = 32
_DIGITS = r"(\d+)"
# re.ASCII: \d must not match other scripts' digits, which Slurm's parser does not accept.
_WITH_DAYS = re.compile(rf"{_DIGITS}-{_DIGITS}(?::{_DIGITS}(?::{_DIGITS})?)?", re.ASCII)
_WITHOUT_DAYS = re.compile(rf"{_DIGITS}(?::{_DIGITS}(?::{_DIGITS})?)?", re.ASCII)
_UNLIMITED_SPELLINGS = frozenset({"unlimited", "infinite", "-1"})


def parse_time_limit(text: str) -> int:
    """Parse a Slurm time limit into whole minutes (seconds round up).

    Raises JobSpecError("time_limit", ...) for garbage, negative, zero, unlimited or values
    above MAX_TIME_LIMIT_MINUTES, with a message that shows the accepted formats.
    """
    if not isinstance(text, str) or not text:
        raise JobSpecError(_FIELD, f"a time limit is required; {_HOW_TO}")
    if text.strip().lower() in _UNLIMITED_SPELLINGS:
        raise JobSpecError(_FIELD, f"gateway jobs need a finite time limit, not {text.strip()!r}; {_HOW_TO}")
    if len(text) > _MAX_TEXT_LENGTH:
        raise JobSpecError(_FIELD, f"the time limit is too long to be valid; {_HOW_TO}")
    seconds = _total_seconds(text)
    if seconds is None:
        raise JobSpecError(_FIELD, f"{text!r} is not a Slurm time limit; {_HOW_TO}")
    minutes = -(-seconds // 60)
    return check_time_limit_minutes(minutes)


def check_time_limit_minutes(minutes: int) -> int:
    """Return ``minutes`` if it is a usable limit (1 .. MAX_TIME_LIMIT_MINUTES), else raise."""
    if isinstance(minutes, bool) or not isinstance(minutes, int):
        raise JobSpecError(_FIELD, "the time limit must be a whole number of minutes")
    if minutes < 1:
        raise JobSpecError(_FIELD, f"the time limit must be at least one minute; {_HOW_TO}")
    if minutes > MAX_TIME_LIMIT_MINUTES:
        raise JobSpecError(
            _FIELD, f"the time limit may be at most {format_time_limit(MAX_TIME_LIMIT_MINUTES)} (366 days)"
        )
    return minutes


def format_time_limit(minutes: int) -> str:
    """Format whole minutes as D-HH:MM:SS for #SBATCH --time (unambiguous for every value)."""
    if isinstance(minutes, bool) or not isinstance(minutes, int) or minutes < 1:
        raise JobSpecError(_FIELD, "the time limit must be a positive whole number of minutes")
    days, remainder = divmod(minutes, 24 * 60)
    hours, mins = divmod(remainder, 60)
    return f"{days}-{hours:02d}:{mins:02d}:00"


def _total_seconds(text: str) -> int | None:
    """Seconds in a Slurm time string, or None if it is not one of Slurm's formats."""
    with_days = _WITH_DAYS.fullmatch(text)
    if with_days:
        days, hours, mins, secs = (int(part or 0) for part in with_days.groups())
        return ((days * 24 + hours) * 60 + mins) * 60 + secs
    without_days = _WITHOUT_DAYS.fullmatch(text)
    if without_days:
        first, second, third = without_days.groups()
        if third is not None:
            return (int(first) * 60 + int(second)) * 60 + int(third)
        # "M" or "M:S": a lone pair is minutes:seconds, not hours:minutes (as in Slurm).
        return int(first) * 60 + int(second or 0)
    return None
