"""Job logs: which file holds a job's stdout/stderr, and reading it safely (ranges, tails, chunks).

Each attempt of a job (or step) is its own Slurm job writing ``slurm-<id>.out``/``.err`` (arrays:
``slurm-<array id>_<task>.out``) into the job's working directory, which belongs to the job's
user. The gateway reads them as root, so every open goes through staging.no_follow_paths: a
symlink planted in place of a log file (or the working dir) is refused, never followed.
Tails read backwards in bounded blocks; nothing here reads a whole file into memory.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

from gateway.domain_errors import Conflict, InvalidField
from gateway.job_admission import job_working_dir
from gateway.job_states import WORKFLOW
from gateway.query_params import parse_int
from gateway.storage_models import Job
from slurm.array_summary import array_task_ids
from slurm.job_layout import batch_log_name
from staging.no_follow_paths import PathRefused, opened_below, opened_dir

STREAM_SUFFIXES = {"stdout": "out", "stderr": "err"}
DEFAULT_LIMIT = 1 << 20
MAX_LIMIT = 16 << 20
MAX_TAIL_LINES = 10_000
# A tail of very long lines stops here instead of reading the whole file backwards.
MAX_TAIL_BYTES = 16 << 20
TAIL_BLOCK = 64 << 10
MAX_CHUNK = 64 << 10
# Offsets beyond any real log file are refused before they reach a syscall.
MAX_OFFSET = 1 << 62


@dataclass(frozen=True)
class LogTarget:
    """One log file of one attempt; ``file_name`` is None while the attempt has no Slurm id yet.

    ``row_id`` is the job (or step) row whose ``attempt`` this is, for state checks.
    """

    working_dir: str
    file_name: str | None
    row_id: str
    attempt: int
    state: str
    exit_code: int | None


@dataclass(frozen=True)
class LogRange:
    """Bytes ``offset`` .. ``next_offset`` of a file of ``size`` bytes; ``exists`` False: no file yet."""

    data: bytes
    offset: int
    next_offset: int
    size: int
    exists: bool


def locate_log(
    job: Job,
    *,
    job_root: str,
    stream: str | None,
    step: str | None,
    attempt: str | None,
    task: str | None,
) -> LogTarget:
    """The log file the query parameters name for a job the caller may see; InvalidField naming
    the parameter when one does not fit the job (unknown stream, step, attempt or task)."""
    stream = stream or "stdout"
    if stream not in STREAM_SUFFIXES:
        raise InvalidField("stream", f"unknown stream {stream!r}; one of: stdout, stderr")
    target = _target_row(job, step)
    number = parse_int("attempt", attempt, default=target.attempt, low=1, high=target.attempt)
    if number == target.attempt:
        slurm_id, state, exit_code = target.slurm_job_id, target.state, target.exit_code
    else:
        past = next((row for row in target.past_attempts if row.attempt == number), None)
        if past is None:
            raise InvalidField("attempt", f"attempt {number} was never made")
        slurm_id, state, exit_code = past.slurm_job_id, past.state, past.exit_code
    array = target.spec.get("array")
    task_id = _array_task(array, task)
    file_name = None
    if slurm_id is not None:
        file_name = batch_log_name(slurm_id, STREAM_SUFFIXES[stream], task_id)
    return LogTarget(
        working_dir=job_working_dir(job_root, job.tenant_id, job.id),
        file_name=file_name,
        row_id=target.id,
        attempt=number,
        state=state,
        exit_code=exit_code,
    )


def _target_row(job: Job, step: str | None) -> Job:
    if job.kind != WORKFLOW:
        if step is not None:
            raise InvalidField("step", "this job has no steps; leave step out")
        return job
    names = [row.step_name or "" for row in job.steps]
    if step is None:
        raise InvalidField("step", f"this job has steps; name one with step=: {', '.join(names)}")
    for row in job.steps:
        if row.step_name == step:
            return row
    raise InvalidField("step", f"unknown step {step!r}; one of: {', '.join(names)}")


def _array_task(array: object, task: str | None) -> int | None:
    if not isinstance(array, str):
        if task is not None:
            raise InvalidField("task", "this job is not an array; leave task out")
        return None
    if task is None:
        raise InvalidField("task", f"this job is an array ({array}); name a task with task=")
    number = parse_int("task", task, default=0, low=0, high=MAX_OFFSET)
    if number not in array_task_ids(array):
        raise InvalidField("task", f"task {number} is not in the array {array}")
    return number


class LogFileRefused(Conflict):
    """The log file (or the working dir) is not a plain file the gateway may read: 409."""


def read_range(target: LogTarget, offset: int, limit: int) -> LogRange:
    """Up to ``limit`` bytes from ``offset``; an offset past the end is InvalidField("offset")."""
    with opened_log(target) as fd:
        if fd is None:
            if offset > 0:
                raise InvalidField("offset", f"offset {offset} is past the end of the log (0 bytes so far)")
            return LogRange(b"", 0, 0, 0, exists=False)
        size = os.fstat(fd).st_size
        if offset > size:
            raise InvalidField("offset", f"offset {offset} is past the end of the log ({size} bytes)")
        data = os.pread(fd, min(limit, size - offset), offset)
        return LogRange(data, offset, offset + len(data), size, exists=True)


def read_tail(target: LogTarget, lines: int) -> LogRange:
    """The last ``lines`` lines (a final line without newline counts), read backwards in blocks."""
    with opened_log(target) as fd:
        if fd is None:
            return LogRange(b"", 0, 0, 0, exists=False)
        size = os.fstat(fd).st_size
        start = tail_start(fd, size, lines)
        data = os.pread(fd, size - start, start)
        return LogRange(data, start, start + len(data), size, exists=True)


def tail_start(fd: int, size: int, lines: int) -> int:
    """Offset where the last ``lines`` lines of the first ``size`` bytes begin (at most
    MAX_TAIL_BYTES back: a tail of enormous lines is cut instead of read whole)."""
    floor = max(0, size - MAX_TAIL_BYTES)
    position = size
    # A newline ending the file closes the last line; it does not start another.
    newlines_needed = lines + 1 if size and os.pread(fd, 1, size - 1) == b"\n" else lines
    while position > floor:
        block_start = max(floor, position - TAIL_BLOCK)
        block = os.pread(fd, position - block_start, block_start)
        index = len(block)
        while True:
            index = block.rfind(b"\n", 0, index)
            if index < 0:
                break
            newlines_needed -= 1
            if newlines_needed == 0:
                return block_start + index + 1
        position = block_start
    return floor


@contextmanager
def opened_log(target: LogTarget) -> Iterator[int | None]:
    """The target's file descriptor, or None when there is no file yet (the attempt has not
    started); LogFileRefused when a symlink or special file stands in its place."""
    if target.file_name is None:
        yield None
        return
    with ExitStack() as stack:
        fd: int | None
        try:
            dir_fd = stack.enter_context(opened_dir(target.working_dir))
            fd = stack.enter_context(opened_below(dir_fd, [target.file_name], final_is_dir=False))
        except PathRefused as refused:
            if refused.problem != "is missing":
                problem = f"the log file cannot be read: {refused.where} {refused.problem}"
                raise LogFileRefused(problem) from None
            fd = None
        yield fd


def read_from(target: LogTarget, offset: int, max_bytes: int) -> tuple[int, int, bytes] | None:
    """(inode, size, up to ``max_bytes`` from ``offset``) of the file now; None while it is missing."""
    with opened_log(target) as fd:
        if fd is None:
            return None
        status = os.fstat(fd)
        wanted = min(max_bytes, status.st_size - offset)
        return status.st_ino, status.st_size, os.pread(fd, wanted, offset) if wanted > 0 else b""


def utf8_cut(data: bytes, *, final: bool) -> int:
    """How many leading bytes of ``data`` to send now: all of it, except an incomplete UTF-8
    sequence at the very end (held back until more bytes arrive, unless ``final``)."""
    if final:
        return len(data)
    # A lead byte within the last 3 bytes whose sequence runs past the end is held back.
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte < 0x80 or byte >= 0xF8:
            # ASCII, or a byte no UTF-8 sequence uses: nothing here waits for more bytes.
            return len(data)
        if byte >= 0xC0:
            needed = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return len(data) - back if needed > back else len(data)
    return len(data)


def chunk_payload(offset: int, data: bytes) -> dict[str, object]:
    """The SSE ``log`` event data for ``data`` starting at ``offset``: text, or base64 if not UTF-8."""
    try:
        return {"offset": offset, "text": data.decode("utf-8")}
    except UnicodeDecodeError:
        return {"offset": offset, "base64": base64.b64encode(data).decode("ascii")}


def split_chunks(buffer: bytes, *, final: bool) -> tuple[list[bytes], int]:
    """``buffer`` cut into chunks of at most MAX_CHUNK bytes on UTF-8 boundaries; returns the
    chunks and how many bytes they hold (the rest, an incomplete trailing sequence, waits for
    more bytes unless ``final``)."""
    chunks: list[bytes] = []
    used = 0
    while used < len(buffer):
        piece = buffer[used : used + MAX_CHUNK]
        is_last = used + len(piece) == len(buffer)
        # Inside the buffer the next bytes are known: an incomplete sequence moves to the next chunk.
        cut = utf8_cut(piece, final=final and is_last)
        if cut == 0:
            if is_last:
                break
            cut = len(piece)
        chunks.append(piece[:cut])
        used += cut
    return chunks, used
