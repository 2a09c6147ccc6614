"""Opening paths below a user's directory as root, one component at a time, never following a link.

The gateway runs as root and a job's working directory belongs to the job's user, so every
component is opened relative to its parent's file descriptor with O_NOFOLLOW: a symlink planted
anywhere is refused instead of leading root elsewhere. Files are opened non-blocking (a FIFO
never stalls the caller) and only regular files count as files. Used to read attempts' outputs
(staging.output_checkpoints) and to upload them (staging.stage_out).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO must not wait for a writer; O_NOCTTY: a device never becomes our tty.
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


class PathRefused(Exception):
    """A path below the working dir that may not be read; ``where`` is relative to the job dir."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where} {problem}")
        self.where = where
        self.problem = problem


def check_step_name(step: str) -> None:
    # Step names are validated at admission; one that is not a single path component is a bug.
    if not is_plain_component(step):
        raise ValueError(f"step name {step!r} is not a single path component")


def is_plain_component(name: str) -> bool:
    return name not in ("", ".", "..") and "/" not in name and "\0" not in name


@contextmanager
def opened_dir(working_dir: str) -> Iterator[int]:
    """The working dir itself; its parents are the gateway's, its last component is not followed."""
    try:
        fd = os.open(working_dir, DIR_FLAGS)
    except OSError as exc:
        is_link = exc.errno == errno.ENOTDIR and os.path.islink(working_dir)
        raise PathRefused("the working directory", "is a symlink" if is_link else open_problem(exc)) from None
    try:
        yield fd
    finally:
        os.close(fd)


@contextmanager
def opened_below(
    dir_fd: int,
    parts: Sequence[str],
    *,
    shown_prefix: Sequence[str] = (),
    final_is_dir: bool = True,
) -> Iterator[int]:
    """``dir_fd/parts[0]/.../parts[-1]`` opened one component at a time, no symlink followed.

    Every component but the last must be a directory; the last is a directory, or (with
    ``final_is_dir=False``) a regular file. Refusals name the path relative to the job dir.
    """
    fd = dir_fd
    try:
        for index, name in enumerate(parts):
            if not is_plain_component(name):
                raise ValueError(f"not a single path component: {name!r}")
            is_last = index == len(parts) - 1
            flags = FILE_FLAGS if is_last and not final_is_dir else DIR_FLAGS
            shown = "/".join([*shown_prefix, *parts[: index + 1]])
            try:
                next_fd = os.open(name, flags, dir_fd=fd)
            except OSError as exc:
                # O_DIRECTORY|O_NOFOLLOW reports a symlink as ENOTDIR: say which it was.
                is_link = exc.errno == errno.ENOTDIR and describe_entry(fd, name) == "a symlink"
                problem = "is a symlink" if is_link else open_problem(exc)
                raise PathRefused(shown, problem) from None
            if fd != dir_fd:
                os.close(fd)
            fd = next_fd
            if is_last and not final_is_dir and not stat.S_ISREG(os.fstat(fd).st_mode):
                raise PathRefused(shown, "is not a regular file")
        yield fd
    finally:
        if fd != dir_fd:
            os.close(fd)


def describe_entry(dir_fd: int, name: str) -> str:
    """What ``name`` is, for a refusal ("a symlink", "a directory", ...)."""
    try:
        mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
    except OSError:
        return "unreadable"
    if stat.S_ISLNK(mode):
        return "a symlink"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISREG(mode):
        return "a regular file"
    return "a special file"


def open_problem(exc: OSError) -> str:
    if exc.errno == errno.ENOENT:
        return "is missing"
    if exc.errno == errno.ELOOP:
        return "is a symlink"
    if exc.errno == errno.ENOTDIR:
        return "is not a directory"
    return f"cannot be opened ({exc.strerror})"
