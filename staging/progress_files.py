"""The latest progress an attempt reported: the last valid line of its progress file.

The attempt's programs append JSON lines to $SGW_PROGRESS_FILE (slurm.job_layout.progress_file,
written by ``sgw-progress`` or by hand). The file belongs to the job's user and the gateway
reads it as root, so:

- it is opened one component at a time without following a symlink (staging.no_follow_paths),
  and only a regular file is read;
- only its last TAIL_BYTES are read, whatever its size, and a line is taken only once its
  newline is written (a line being appended is not read half-way);
- the last line that is a JSON object with something usable in it wins; a malformed line is
  skipped for the one before it;
- what it holds is clamped: the fraction to 0..1 (or None), the message to MESSAGE_MAX_CHARS
  without control characters, at most METRICS_MAX metrics with finite numbers for values and
  names of METRIC_NAME_PATTERN. Nothing the user writes raises; the file simply reads as no
  progress.
"""

from __future__ import annotations

import math
import os
import re
import unicodedata
from typing import Any

import msgspec

from slurm.job_layout import PROGRESS_DIR, progress_file
from staging.no_follow_paths import PathRefused, check_step_name, opened_below, opened_dir

TAIL_BYTES = 64 * 1024
MESSAGE_MAX_CHARS = 500
METRICS_MAX = 32
# The names `sgw-progress` accepts (slurm.step_wrapper); other names are dropped.
METRIC_NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_.:/-]{0,63}")


class Progress(msgspec.Struct, frozen=True, kw_only=True):
    """One progress report, as stored in Job.progress."""

    fraction: float | None = None
    message: str | None = None
    metrics: dict[str, float] = msgspec.field(default_factory=dict)


def latest_progress(working_dir: str, step: str, attempt: int) -> Progress | None:
    """The attempt's latest valid progress, or None when it reported none (or none readable).

    A missing file, a symlink anywhere below the working dir, a file that is not regular, or
    a tail without one valid complete line all read as None.
    """
    check_step_name(step)
    name = os.path.basename(progress_file(working_dir, step, attempt))
    try:
        with (
            opened_dir(working_dir) as work_fd,
            opened_below(work_fd, [PROGRESS_DIR, name], final_is_dir=False) as fd,
        ):
            size = os.fstat(fd).st_size
            start = max(0, size - TAIL_BYTES)
            tail = os.pread(fd, size - start, start)
    except PathRefused:
        return None
    return last_valid_progress(tail, starts_mid_line=start > 0)


def last_valid_progress(tail: bytes, *, starts_mid_line: bool) -> Progress | None:
    """The last complete line of ``tail`` that is valid progress, or None.

    ``starts_mid_line``: ``tail`` is the end of a longer file, so its first line may be cut.
    """
    lines = tail.split(b"\n")
    # After the last newline: a line still being written (or nothing).
    complete = lines[:-1]
    if starts_mid_line:
        complete = complete[1:]
    for line in reversed(complete):
        progress = parse_progress_line(line)
        if progress is not None:
            return progress
    return None


def parse_progress_line(line: bytes) -> Progress | None:
    """One JSON line as clamped progress; None when it is not a JSON object or holds nothing usable."""
    try:
        value = msgspec.json.decode(line)
    except (msgspec.DecodeError, RecursionError):
        return None
    if not isinstance(value, dict):
        return None
    progress = Progress(
        fraction=_fraction(value.get("fraction")),
        message=_message(value.get("message")),
        metrics=_metrics(value.get("metrics")),
    )
    if progress.fraction is None and progress.message is None and not progress.metrics:
        return None
    return progress


def _number(value: Any) -> float | None:
    # bool is an int in Python; JSON true/false are not numbers.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _fraction(value: Any) -> float | None:
    number = _number(value)
    return None if number is None else min(1.0, max(0.0, number))


def _message(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    # Only the start can survive: bound the work before cleaning.
    text = "".join(ch for ch in value[: MESSAGE_MAX_CHARS * 4] if unicodedata.category(ch) != "Cc")
    return text[:MESSAGE_MAX_CHARS] or None


def _metrics(value: Any) -> dict[str, float]:
    if not isinstance(value, dict):
        return {}
    metrics: dict[str, float] = {}
    for name, raw in value.items():
        number = _number(raw)
        if number is None or not isinstance(name, str) or not METRIC_NAME_PATTERN.fullmatch(name):
            continue
        metrics[name] = number
        if len(metrics) == METRICS_MAX:
            break
    return metrics
