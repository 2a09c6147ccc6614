"""A completed attempt's outputs: recorded from its manifest, verified again before a retry skips it.

The gateway runs as root and everything below a job's working directory belongs to the job's
user (slurm.job_layout), so every path component here is opened relative to its parent's file
descriptor without following symlinks: a symlink planted anywhere (``.attempts``, a directory in
``out/``, the manifest, a listed file) is refused instead of leading root to /etc/shadow. Files are
opened non-blocking (a FIFO never stalls the reconciler) and only regular files are read, each
read bounded (manifests by size, hashed outputs by their recorded size). ``..`` never appears in a
walked component, so a walk cannot climb out of the directory it starts in.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
from collections.abc import Sequence

import msgspec

from slurm.job_layout import (
    ATTEMPT_OUT_DIR,
    ATTEMPTS_DIR,
    MANIFEST_NAME,
    OUTPUTS_DIR,
    published_link_target,
)
from staging.no_follow_paths import (
    PathRefused,
    check_step_name,
    describe_entry,
    is_plain_component,
    open_problem,
    opened_below,
    opened_dir,
)

# Bounds on what root reads from a user's manifests (all manifests of one attempt together).
MAX_MANIFEST_BYTES = 16 * 1024 * 1024
MAX_MANIFEST_ENTRIES = 100_000
HASH_CHUNK_BYTES = 1024 * 1024
# An array job has one manifest per task; more directory entries than that is not a real attempt.
_MAX_ATTEMPT_DIR_ENTRIES = MAX_MANIFEST_ENTRIES + 100


_ARRAY_MANIFEST_NAME = re.compile(r"manifest\.(0|[1-9][0-9]*)\.sha256", re.ASCII)
# sha256sum's text-mode line; the path part is checked separately for clearer refusals.
_MANIFEST_LINE = re.compile(rb"([0-9a-fA-F]{64})  (.*)", re.DOTALL)
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


class OutputFile(msgspec.Struct, frozen=True, kw_only=True):
    """One file of an attempt's outputs, as its manifest recorded it."""

    # Relative to the attempt's out/ dir, without "./", e.g. "model/weights.bin".
    path: str
    # Lower-case hex digest the job computed.
    sha256: str
    # Bytes, from the file itself when the outputs were recorded.
    size: int


class OutputsUnreadable(Exception):
    """The attempt's outputs cannot be recorded; ``message`` is one line for the job's user."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def read_attempt_outputs(working_dir: str, step: str, attempt: int) -> list[OutputFile]:
    """The outputs attempt ``attempt`` of ``step`` recorded in its manifest(s), sorted by path.

    Reads ``manifest.sha256``, or every ``manifest.<task>.sha256`` of an array job (never both).
    Digests are the job's own (not recomputed: this runs in the reconciler loop); sizes come from
    a no-follow ``fstat`` of each listed file, which must exist and be a regular file. Raises
    OutputsUnreadable for anything the job's user caused: malformed, escaped, absolute, ``..`` or
    duplicate lines, oversized manifests, missing files, symlinks anywhere on the way.
    """
    check_step_name(step)
    attempt_parts = [ATTEMPTS_DIR, step, f"a{attempt}"]
    try:
        with opened_dir(working_dir) as work_fd, opened_below(work_fd, attempt_parts) as attempt_fd:
            entries = _read_manifests(attempt_fd, attempt_parts)
            with opened_below(attempt_fd, [ATTEMPT_OUT_DIR], shown_prefix=attempt_parts) as out_fd:
                shown_out = [*attempt_parts, ATTEMPT_OUT_DIR]
                outputs = [
                    OutputFile(path=path, sha256=digest, size=_regular_file_size(out_fd, path, shown_out))
                    for path, digest in entries.items()
                ]
    except PathRefused as exc:
        raise OutputsUnreadable(f"{exc.where} {exc.problem}") from None
    return sorted(outputs, key=lambda output: output.path)


def verify_published_outputs(
    working_dir: str, step: str, attempt: int, files: Sequence[OutputFile]
) -> str | None:
    """None when the step's published outputs are still exactly ``files`` of ``attempt``.

    That is: ``outputs/<step>`` is a symlink to ``published_link_target(step, attempt)`` and every
    file is still a regular file of the recorded size and sha256 (recomputed in 1 MiB chunks, never
    reading past the recorded size). Otherwise a short reason for the job's user, e.g.
    "outputs/train points at another attempt"; states the user caused never raise.
    """
    check_step_name(step)
    shown_link = f"{OUTPUTS_DIR}/{step}"
    out_parts = [ATTEMPTS_DIR, step, f"a{attempt}", ATTEMPT_OUT_DIR]
    try:
        with opened_dir(working_dir) as work_fd:
            with opened_below(work_fd, [OUTPUTS_DIR]) as outputs_fd:
                problem = _published_link_problem(outputs_fd, step, published_link_target(step, attempt))
            if problem is not None:
                return f"{shown_link} {problem}"
            with opened_below(work_fd, out_parts) as out_fd:
                # Cheap checks first: a missing file is found before gigabytes are hashed.
                for output in files:
                    if _regular_file_size(out_fd, output.path, [shown_link]) != output.size:
                        return f"{shown_link}/{output.path} changed (size differs)"
                for output in files:
                    if not _has_digest(out_fd, output, [shown_link]):
                        return f"{shown_link}/{output.path} changed (sha256 differs)"
    except PathRefused as exc:
        return f"{exc.where} {exc.problem}"
    return None


def _published_link_problem(outputs_fd: int, step: str, expected_target: str) -> str | None:
    try:
        target = os.readlink(step, dir_fd=outputs_fd)
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            kind = describe_entry(outputs_fd, step)
            return f"is {kind}, not a link to the published attempt"
        return open_problem(exc)
    return None if target == expected_target else "points at another attempt"


def _read_manifests(attempt_fd: int, attempt_parts: list[str]) -> dict[str, str]:
    """Every manifest line of the attempt as {path: sha256}, checked line by line."""
    names = _manifest_names(attempt_fd, "/".join(attempt_parts))
    entries: dict[str, str] = {}
    bytes_left = MAX_MANIFEST_BYTES
    for name in names:
        data = _read_manifest_file(attempt_fd, name, attempt_parts, limit=bytes_left)
        bytes_left -= len(data)
        _parse_manifest(data, "/".join([*attempt_parts, name]), entries)
    return entries


def _manifest_names(attempt_fd: int, shown_attempt: str) -> list[str]:
    plain = False
    array: list[tuple[int, str]] = []
    with os.scandir(attempt_fd) as listing:
        for count, entry in enumerate(listing):
            if count >= _MAX_ATTEMPT_DIR_ENTRIES:
                raise PathRefused(shown_attempt, "has too many entries")
            if entry.name == MANIFEST_NAME:
                plain = True
            elif match := _ARRAY_MANIFEST_NAME.fullmatch(entry.name):
                array.append((int(match.group(1)), entry.name))
    if plain and array:
        raise PathRefused(shown_attempt, f"has both {MANIFEST_NAME} and per-task manifests")
    if plain:
        return [MANIFEST_NAME]
    if not array:
        raise PathRefused(shown_attempt, f"has no {MANIFEST_NAME} (did the attempt finish?)")
    return [name for _, name in sorted(array)]


def _parse_manifest(data: bytes, shown: str, entries: dict[str, str]) -> None:
    """Adds the manifest's lines to ``entries``; refuses anything sha256sum would not write."""
    if data and not data.endswith(b"\n"):
        raise PathRefused(shown, "does not end with a newline (cut short?)")
    # Split on newlines only: any other control character in a name is refused below, by name.
    lines = data[:-1].split(b"\n") if data else []
    for number, line in enumerate(lines, start=1):
        where = f"line {number}:"
        if line.startswith(b"\\"):
            raise PathRefused(
                shown, f"{where} escaped file name (a backslash or newline in a name); rename the file"
            )
        match = _MANIFEST_LINE.fullmatch(line)
        if match is None:
            raise PathRefused(shown, f"{where} not in sha256sum's '<sha256>  ./<path>' form")
        path = _manifest_path(match.group(2), shown, where)
        if path in entries:
            raise PathRefused(shown, f"{where} {path} is listed twice")
        if len(entries) >= MAX_MANIFEST_ENTRIES:
            raise PathRefused(shown, f"lists more than {MAX_MANIFEST_ENTRIES} files")
        entries[path] = match.group(1).decode("ascii").lower()


def _manifest_path(raw: bytes, shown: str, where: str) -> str:
    if raw.startswith(b"/"):
        raise PathRefused(shown, f"{where} absolute path; paths must be ./relative to the output dir")
    if not raw.startswith(b"./"):
        raise PathRefused(shown, f"{where} path does not start with ./")
    try:
        path = raw[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise PathRefused(shown, f"{where} file name is not UTF-8") from None
    if _CONTROL_CHARACTERS.search(path):
        raise PathRefused(shown, f"{where} control character in a file name")
    parts = path.split("/")
    if ".." in parts:
        raise PathRefused(shown, f"{where} '..' in a path")
    if not all(is_plain_component(part) for part in parts):
        raise PathRefused(shown, f"{where} empty or '.' path component")
    return path


def _regular_file_size(dir_fd: int, path: str, shown_prefix: list[str]) -> int:
    with opened_below(dir_fd, path.split("/"), shown_prefix=shown_prefix, final_is_dir=False) as fd:
        return os.fstat(fd).st_size


def _has_digest(out_fd: int, output: OutputFile, shown_prefix: list[str]) -> bool:
    """Whether the file holds exactly ``output.size`` bytes with ``output.sha256``."""
    parts = output.path.split("/")
    with opened_below(out_fd, parts, shown_prefix=shown_prefix, final_is_dir=False) as fd:
        digest = hashlib.sha256()
        left = output.size
        while left > 0:
            chunk = os.read(fd, min(HASH_CHUNK_BYTES, left))
            if not chunk:
                return False
            digest.update(chunk)
            left -= len(chunk)
        # A file that grew since the size check has more to read: changed, and not read further.
        return not os.read(fd, 1) and digest.hexdigest() == output.sha256


def _read_manifest_file(dir_fd: int, name: str, shown_prefix: list[str], *, limit: int) -> bytes:
    shown = "/".join([*shown_prefix, name])
    too_large = f"is too large (an attempt's manifests may hold {MAX_MANIFEST_BYTES} bytes in all)"
    with opened_below(dir_fd, [name], shown_prefix=shown_prefix, final_is_dir=False) as fd:
        if os.fstat(fd).st_size > limit:
            raise PathRefused(shown, too_large)
        chunks: list[bytes] = []
        read = 0
        # Read to EOF but never past the limit: the file may grow after fstat.
        while chunk := os.read(fd, min(HASH_CHUNK_BYTES, limit + 1 - read)):
            chunks.append(chunk)
            read += len(chunk)
            if read > limit:
                raise PathRefused(shown, too_large)
        return b"".join(chunks)
