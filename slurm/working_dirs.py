"""The job's working directory, made ready for its user right before submission."""

from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path

from slurm.batch_job import BatchJob
from slurm.errors import JobSpecError, SlurmUnavailable

# Private to the user and their group: job inputs and outputs are the tenant's data.
WORKING_DIR_MODE = 0o750


def prepare_working_dir(job: BatchJob) -> None:
    """Create the job's directory and give it to the job's user.

    slurmd opens the output files and changes into the directory as the job's user; a missing
    or foreign directory makes the job fail on the node long after slurmrestd accepted it.
    """
    prepare_directory(job.working_dir, job.unix_user)


def prepare_directory(working_dir: str, unix_user: str) -> pwd.struct_passwd:
    """Create ``working_dir`` for ``unix_user`` (mode 0750, theirs); returns their passwd entry.

    Also used before stage-in, which writes into the directory as that user before submission.
    """
    try:
        account = pwd.getpwnam(unix_user)
    except KeyError as exc:
        raise JobSpecError("unix_user", f"no Unix user {unix_user!r} on the submit host") from exc
    path = Path(working_dir)
    try:
        path.mkdir(mode=WORKING_DIR_MODE, parents=True, exist_ok=True)
        # lstat: a symlink planted at the path must not hand its target to the user.
        status = os.lstat(path)
        if stat.S_ISLNK(status.st_mode) or status.st_uid not in (account.pw_uid, 0):
            raise JobSpecError("working_dir", "the working directory belongs to another user")
        os.chown(path, account.pw_uid, account.pw_gid, follow_symlinks=False)
        path.chmod(WORKING_DIR_MODE)
    except OSError as exc:
        raise SlurmUnavailable(f"cannot prepare the working directory: {exc.strerror}") from exc
    return account
