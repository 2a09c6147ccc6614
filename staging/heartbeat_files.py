"""When a running attempt last touched its heartbeat file (slurm.job_layout.heartbeat_file).

The gateway runs as root and the job's user owns the working dir's contents, so neither the
``.heartbeat`` directory nor the file is followed when it is a symlink: root never stats (or
reveals the mtime of) a file the user merely pointed at.
"""

from __future__ import annotations

import errno
import os
from pathlib import PurePosixPath

from slurm.job_layout import HEARTBEAT_DIR

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# Where a path component is missing, not a directory, or a symlink that is not followed.
_ABSENT_ERRNOS = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ELOOP})


def last_heartbeat(path: str) -> float | None:
    """The heartbeat file's mtime (epoch seconds), or None when there is no heartbeat file.

    ``path`` is ``<working_dir>/.heartbeat/<step>.a<n>``. The working dir (whose parents are the
    gateway's) and ``.heartbeat`` are opened without following symlinks, and the file is
    ``lstat``-ed: a missing file, a parent that is not a directory, or a parent that is a symlink
    all read as None. A heartbeat file that is itself a symlink gives the symlink's own mtime,
    never its target's (a job that keeps re-creating the link is alive; nothing of the target
    leaks). Other errors (EACCES, EIO) raise OSError: they are not the job's doing.
    """
    heartbeat = PurePosixPath(path)
    if heartbeat.parent.name != HEARTBEAT_DIR:
        raise ValueError(f"{path!r} is not in a {HEARTBEAT_DIR} directory")
    try:
        work_fd = os.open(heartbeat.parent.parent, _DIR_FLAGS)
    except OSError as exc:
        return _absent_or_raise(exc)
    try:
        beat_dir_fd = os.open(HEARTBEAT_DIR, _DIR_FLAGS, dir_fd=work_fd)
    except OSError as exc:
        return _absent_or_raise(exc)
    finally:
        os.close(work_fd)
    try:
        return os.stat(heartbeat.name, dir_fd=beat_dir_fd, follow_symlinks=False).st_mtime
    except OSError as exc:
        return _absent_or_raise(exc)
    finally:
        os.close(beat_dir_fd)


def _absent_or_raise(exc: OSError) -> None:
    if exc.errno in _ABSENT_ERRNOS:
        return None
    raise exc
