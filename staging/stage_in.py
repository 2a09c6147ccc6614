"""Stage-in: a stored object's bytes written into a job's working directory, as root, safely.

The gateway runs as root and the working directory belongs to the job's user, who may have planted
symlinks anywhere below it (or be racing to plant them). So nothing below the working directory is
named by a path: each directory is opened, or created and handed to the user, relative to its
parent's file descriptor without following symlinks. The bytes go to a fresh temporary file next
to the destination (O_EXCL|O_NOFOLLOW: never an existing file, never through a link), owned by the
job's user, and the finished file is renamed over the destination. A rename replaces a file or a
symlink at the destination instead of writing through it, and the job sees the whole file or none.
"""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
import stat
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress

import msgspec

from slurm.job_layout import ATTEMPTS_DIR, HEARTBEAT_DIR, OUTPUTS_DIR, PROGRESS_DIR
from staging.object_paths import relative_path_problem
from staging.storage_errors import DigestMismatch, SizeLimitExceeded

# The gateway's own entries in the working directory (slurm.job_layout).
RESERVED_FIRST_SEGMENTS = frozenset({OUTPUTS_DIR, ATTEMPTS_DIR, HEARTBEAT_DIR, PROGRESS_DIR})
# Batch logs: --output/--error are <working_dir>/slurm-<job>.out/.err.
BATCH_LOG_PREFIX = "slurm-"
# Temporary files of a stage-in in progress are named .sgw-partial-<random>, in any directory.
GATEWAY_NAME_PREFIX = ".sgw"
PARTIAL_PREFIX = ".sgw-partial-"

_DIR_MODE = 0o750
_FILE_MODE = 0o640
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_PARTIAL_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class InvalidStagePath(Exception):
    """An input's destination path is unusable; ``message`` says why, for the API user."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class StageInRefused(Exception):
    """The working directory cannot take the file (a symlink or a non-directory on the way, a
    directory at the destination, a write the filesystem refused); ``message`` is one line for
    the job's user, naming the path relative to the working directory."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class StagedFile(msgspec.Struct, frozen=True, kw_only=True):
    """A file stage-in wrote: its path relative to the working directory, bytes and sha256."""

    path: str
    size: int
    # Lower-case hex digest of the bytes written.
    sha256: str


def validate_input_path(raw: str) -> str:
    """``raw`` unchanged if it may name an input file relative to the job's working directory.

    Raises InvalidStagePath for empty or absolute paths, empty/``.``/``..`` segments, control
    characters, backslashes, over-long names, names of the gateway's own layout as first segment
    (``outputs``, ``.attempts``, ``.heartbeat``, batch logs ``slurm-*``) and ``.sgw*`` segments.
    """
    problem = relative_path_problem(raw, what="input path", base="the working directory")
    if problem is not None:
        raise InvalidStagePath(problem)
    segments = raw.split("/")
    for segment in segments:
        if segment.startswith(GATEWAY_NAME_PREFIX):
            raise InvalidStagePath(f"names starting with `{GATEWAY_NAME_PREFIX}` are reserved by the gateway")
    first = segments[0]
    if first in RESERVED_FIRST_SEGMENTS or first.startswith(BATCH_LOG_PREFIX):
        raise InvalidStagePath(
            f"`{first}` is used by the gateway in the working directory; choose another name"
        )
    return raw


def write_into_working_dir(
    chunks: Iterable[bytes],
    working_dir: str,
    path: str,
    *,
    uid: int,
    gid: int,
    expected_sha256: str | None,
    max_bytes: int | None,
) -> StagedFile:
    """Write ``chunks`` to ``working_dir/path`` as a file of ``uid``:``gid``, mode 0640.

    Missing parent directories are created (mode 0750, owned by ``uid``:``gid``). The file
    appears complete or not at all, replacing an existing file or symlink without following it.
    Raises InvalidStagePath, StageInRefused (a symlink or non-directory on the way, a directory
    at the destination, a filesystem error such as a full disk), DigestMismatch when the bytes'
    sha256 is not ``expected_sha256``, SizeLimitExceeded past ``max_bytes``, and whatever the
    chunks' iterator raises; on any error no temporary file is left behind.
    """
    path = validate_input_path(path)
    *parents, name = path.split("/")
    expected = expected_sha256.lower() if expected_sha256 is not None else None
    with _opened_working_dir(working_dir) as work_fd, _parent_dir(work_fd, parents, uid, gid) as parent_fd:
        size, digest = _write_file(
            chunks, parent_fd, name, path, uid=uid, gid=gid, expected=expected, max_bytes=max_bytes
        )
    return StagedFile(path=path, size=size, sha256=digest)


@contextmanager
def _opened_working_dir(working_dir: str) -> Iterator[int]:
    # Its parents are the gateway's own; only its last component could be the user's link.
    try:
        fd = os.open(working_dir, _DIR_FLAGS)
    except OSError as exc:
        raise StageInRefused(f"the working directory {_open_problem(exc, None, working_dir)}") from None
    try:
        yield fd
    finally:
        os.close(fd)


@contextmanager
def _parent_dir(work_fd: int, parents: list[str], uid: int, gid: int) -> Iterator[int]:
    """The destination's directory below ``work_fd``, each component opened or created in turn."""
    fd = work_fd
    try:
        for index, name in enumerate(parents):
            next_fd = _open_or_create_dir(fd, name, "/".join(parents[: index + 1]), uid, gid)
            if fd != work_fd:
                os.close(fd)
            fd = next_fd
        yield fd
    finally:
        if fd != work_fd:
            os.close(fd)


def _open_or_create_dir(parent_fd: int, name: str, shown: str, uid: int, gid: int) -> int:
    try:
        os.mkdir(name, _DIR_MODE, dir_fd=parent_fd)
        created = True
    except FileExistsError:
        created = False
    except OSError as exc:
        raise StageInRefused(f"{shown} cannot be created ({exc.strerror})") from None
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except OSError as exc:
        raise StageInRefused(f"{shown} {_open_problem(exc, parent_fd, name)}") from None
    # Hand over only the directory root created: if the user swapped in one of theirs between
    # mkdir and open, it stays as it is.
    try:
        if created and os.fstat(fd).st_uid == os.geteuid():
            os.fchown(fd, uid, gid)
            os.fchmod(fd, _DIR_MODE)
    except OSError as exc:
        os.close(fd)
        raise StageInRefused(f"{shown} cannot be handed to the job's user ({exc.strerror})") from None
    return fd


def _write_file(
    chunks: Iterable[bytes],
    parent_fd: int,
    name: str,
    shown: str,
    *,
    uid: int,
    gid: int,
    expected: str | None,
    max_bytes: int | None,
) -> tuple[int, str]:
    """(size, sha256) of the bytes now at ``parent_fd/name``, written via a temporary sibling."""
    partial = f"{PARTIAL_PREFIX}{secrets.token_hex(8)}"
    with _refused_on_os_error(shown, "cannot be written"):
        fd = os.open(partial, _PARTIAL_FLAGS, _FILE_MODE, dir_fd=parent_fd)
    try:
        try:
            size, digest = _stream_into(fd, chunks, shown, uid=uid, gid=gid, max_bytes=max_bytes)
        finally:
            os.close(fd)
        if expected is not None and digest != expected:
            raise DigestMismatch(expected, digest)
        _rename_into_place(parent_fd, partial, name, shown)
    except BaseException:
        _unlink_quietly(parent_fd, partial)
        raise
    return size, digest


def _stream_into(
    fd: int, chunks: Iterable[bytes], shown: str, *, uid: int, gid: int, max_bytes: int | None
) -> tuple[int, str]:
    with _refused_on_os_error(shown, "cannot be written"):
        os.fchown(fd, uid, gid)
        # Exactly 0640 whatever the gateway's umask.
        os.fchmod(fd, _FILE_MODE)
    digest = hashlib.sha256()
    size = 0
    # The chunks' own errors (storage unavailable, ...) pass through untranslated.
    for chunk in chunks:
        size += len(chunk)
        if max_bytes is not None and size > max_bytes:
            raise SizeLimitExceeded(max_bytes)
        digest.update(chunk)
        with _refused_on_os_error(shown, "cannot be written"):
            _write_all(fd, chunk)
    with _refused_on_os_error(shown, "cannot be written"):
        os.fsync(fd)
    return size, digest.hexdigest()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _rename_into_place(parent_fd: int, partial: str, name: str, shown: str) -> None:
    try:
        os.rename(partial, name, src_dir_fd=parent_fd, dst_dir_fd=parent_fd)
    except IsADirectoryError:
        raise StageInRefused(f"{shown} is a directory; an input must name a file") from None
    except OSError as exc:
        raise StageInRefused(f"{shown} cannot be written ({exc.strerror})") from None
    # The rename itself must survive a crash, not just the file's bytes.
    with _refused_on_os_error(shown, "cannot be written"):
        os.fsync(parent_fd)


def _unlink_quietly(parent_fd: int, partial: str) -> None:
    """Remove the temporary file (never raises: another error is on its way out)."""
    with suppress(OSError):
        os.unlink(partial, dir_fd=parent_fd)


@contextmanager
def _refused_on_os_error(shown: str, action: str) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise StageInRefused(f"{shown} {action} ({exc.strerror})") from None


def _open_problem(exc: OSError, dir_fd: int | None, name: str) -> str:
    """Why opening directory ``name`` failed, for the job's user."""
    if exc.errno in (errno.ENOTDIR, errno.ELOOP):
        # O_DIRECTORY|O_NOFOLLOW reports a symlink as ENOTDIR: say which it was.
        try:
            is_link = stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
        except OSError:
            is_link = False
        return "is a symlink (staging never follows links)" if is_link else "is not a directory"
    if exc.errno == errno.ENOENT:
        return "is missing"
    return f"cannot be opened ({exc.strerror})"
