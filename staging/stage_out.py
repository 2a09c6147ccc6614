"""Stage-out: which of a completed attempt's outputs to upload, and reading them as root, safely.

A job's ``outputs`` are globs relative to the attempt's output directory ($SGW_OUTPUT_DIR), matched
against the files its manifest lists (staging.output_checkpoints), never against the directory
itself: only files the job recorded a digest for can be selected. Reading walks every component
relative to its parent's file descriptor without following symlinks (the directory belongs to the
job's user) and reads regular files only; the caller streams the bytes into a blob writer that
expects the manifest's sha256, so the job's own digest is verified end to end.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from fnmatch import fnmatchcase

import msgspec

from slurm.job_layout import ATTEMPT_OUT_DIR, ATTEMPTS_DIR
from staging.no_follow_paths import PathRefused, check_step_name, opened_below, opened_dir
from staging.object_paths import relative_path_problem
from staging.output_checkpoints import OutputFile
from staging.stage_in import InvalidStagePath

MAX_PATTERN_BYTES = 1024
DEFAULT_CHUNK_BYTES = 4 * 1024 * 1024
RECURSIVE_WILDCARD = "**"


class StageOutRefused(Exception):
    """An output cannot be read as recorded (a symlink, not a regular file, changed since the
    manifest); ``message`` is one line for the job's user, naming the path below the job dir."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class SelectedOutputs(msgspec.Struct, frozen=True, kw_only=True):
    """The outputs some pattern selected (each once, sorted by path) and the patterns that
    selected nothing (in the order given)."""

    files: list[OutputFile]
    unmatched: list[str]


def validate_output_pattern(raw: str) -> str:
    """``raw`` unchanged if it is a usable glob relative to the attempt's output directory.

    ``*``, ``?`` and ``[...]`` match within one path segment; ``**`` as a whole segment matches
    any number of segments (none included); a trailing ``/`` selects directories only. Raises
    InvalidStagePath for empty or absolute patterns, empty/``.``/``..`` segments, control
    characters, backslashes, ``**`` inside a segment and over-long patterns.
    """
    problem = relative_path_problem(
        raw.removesuffix("/"), what="output pattern", base="the output directory", max_bytes=MAX_PATTERN_BYTES
    )
    if problem is not None:
        raise InvalidStagePath(problem)
    for segment in _segments(raw):
        if RECURSIVE_WILDCARD in segment and segment != RECURSIVE_WILDCARD:
            raise InvalidStagePath("`**` must be a whole path segment, as in `logs/**/*.txt`")
    return raw


def select_outputs(files: Sequence[OutputFile], patterns: Sequence[str]) -> SelectedOutputs:
    """The ``files`` that at least one of ``patterns`` (already validated) selects.

    A pattern selects a file it matches, and every file below a directory it matches (``results``
    selects ``results/a.csv``). ``*`` also matches names starting with ``.``.
    """
    selected: dict[str, OutputFile] = {}
    unmatched: list[str] = []
    split_files = [(output, output.path.split("/")) for output in files]
    for pattern in patterns:
        pattern_parts = _segments(pattern)
        directories_only = pattern.endswith("/")
        matched = False
        for output, path_parts in split_files:
            if _selects(pattern_parts, path_parts, directories_only=directories_only):
                selected[output.path] = output
                matched = True
        if not matched:
            unmatched.append(pattern)
    return SelectedOutputs(files=sorted(selected.values(), key=lambda f: f.path), unmatched=unmatched)


def read_output_chunks(
    working_dir: str,
    step: str,
    attempt: int,
    output: OutputFile,
    *,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> Iterator[bytes]:
    """The bytes of ``output`` from ``.attempts/<step>/a<attempt>/out/<output.path>``, in chunks.

    The file is opened on the first ``next()``. Raises StageOutRefused (while iterating) when a
    component is a symlink or missing, the file is not a regular file, or its size is no longer
    ``output.size``; never yields more than ``output.size`` bytes.
    """
    check_step_name(step)
    parts = [ATTEMPTS_DIR, step, f"a{attempt}", ATTEMPT_OUT_DIR, *output.path.split("/")]
    shown = "/".join(parts)
    try:
        with opened_dir(working_dir) as work_fd, opened_below(work_fd, parts, final_is_dir=False) as fd:
            if os.fstat(fd).st_size != output.size:
                raise StageOutRefused(f"{shown} changed since the attempt recorded it (size differs)")
            left = output.size
            while left > 0:
                chunk = os.read(fd, min(chunk_bytes, left))
                if not chunk:
                    raise StageOutRefused(f"{shown} changed while it was read (shorter than recorded)")
                left -= len(chunk)
                yield chunk
            if os.read(fd, 1):
                raise StageOutRefused(f"{shown} changed while it was read (longer than recorded)")
    except PathRefused as exc:
        raise StageOutRefused(f"{exc.where} {exc.problem}") from None


def _segments(pattern: str) -> list[str]:
    """The pattern's segments; a trailing ``/`` (directories only) is not a segment."""
    return pattern.removesuffix("/").split("/")


def _selects(pattern_parts: list[str], path_parts: list[str], *, directories_only: bool) -> bool:
    """Whether the pattern matches the path, or (with more path after it) a directory above it."""
    # positions: how many leading path segments the pattern so far can have consumed.
    positions = {0}
    for pattern_part in pattern_parts:
        if pattern_part == RECURSIVE_WILDCARD:
            positions = set(range(min(positions), len(path_parts) + 1))
        else:
            positions = {
                index + 1
                for index in positions
                if index < len(path_parts) and fnmatchcase(path_parts[index], pattern_part)
            }
        if not positions:
            return False
    whole_path = len(path_parts)
    if not directories_only and whole_path in positions:
        return True
    return any(0 < position < whole_path for position in positions)
