"""Heartbeat mtimes read the way root must read them: lstat only, no symlink followed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from slurm.job_layout import heartbeat_file
from staging.heartbeat_files import last_heartbeat

STEP = "train"
BEAT_AT = 1_700_000_000.5
TARGET_AT = 1_600_000_000.0


@pytest.fixture
def working_dir(tmp_path: Path) -> Path:
    path = tmp_path / "job"
    path.mkdir()
    return path


def heartbeat(working_dir: Path, attempt: int = 1) -> Path:
    return Path(heartbeat_file(str(working_dir), STEP, attempt))


def test_no_heartbeat_file_yet_is_none(working_dir: Path) -> None:
    assert last_heartbeat(str(heartbeat(working_dir))) is None
    heartbeat(working_dir).parent.mkdir()
    assert last_heartbeat(str(heartbeat(working_dir))) is None


def test_a_touched_heartbeat_gives_its_mtime(working_dir: Path) -> None:
    beat = heartbeat(working_dir)
    beat.parent.mkdir()
    beat.touch()
    os.utime(beat, (BEAT_AT, BEAT_AT))
    assert last_heartbeat(str(beat)) == BEAT_AT
    beat.touch()
    assert last_heartbeat(str(beat)) == beat.stat().st_mtime != BEAT_AT


def test_a_symlinked_heartbeat_gives_the_links_own_mtime_not_its_targets(
    working_dir: Path, tmp_path: Path
) -> None:
    target = tmp_path / "elsewhere"
    target.touch()
    os.utime(target, (TARGET_AT, TARGET_AT))
    beat = heartbeat(working_dir)
    beat.parent.mkdir()
    beat.symlink_to(target)
    os.utime(beat, (BEAT_AT, BEAT_AT), follow_symlinks=False)
    assert last_heartbeat(str(beat)) == BEAT_AT


def test_a_dangling_symlinked_heartbeat_still_gives_the_links_mtime(working_dir: Path) -> None:
    beat = heartbeat(working_dir)
    beat.parent.mkdir()
    beat.symlink_to("/nonexistent/heartbeat")
    os.utime(beat, (BEAT_AT, BEAT_AT), follow_symlinks=False)
    assert last_heartbeat(str(beat)) == BEAT_AT


def test_a_symlinked_heartbeat_dir_is_not_followed(working_dir: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / f"{STEP}.a1").touch()
    (working_dir / ".heartbeat").symlink_to(elsewhere)
    assert (working_dir / ".heartbeat" / f"{STEP}.a1").exists()
    assert last_heartbeat(str(heartbeat(working_dir))) is None


def test_a_symlinked_working_dir_is_not_followed(working_dir: Path, tmp_path: Path) -> None:
    heartbeat(working_dir).parent.mkdir()
    heartbeat(working_dir).touch()
    link = tmp_path / "job-link"
    link.symlink_to(working_dir)
    assert last_heartbeat(str(heartbeat(link))) is None


def test_a_heartbeat_dir_that_is_a_file_is_none(working_dir: Path) -> None:
    (working_dir / ".heartbeat").write_text("not a directory")
    assert last_heartbeat(str(heartbeat(working_dir))) is None


def test_a_missing_working_dir_is_none(tmp_path: Path) -> None:
    assert last_heartbeat(str(heartbeat(tmp_path / "gone"))) is None


def test_a_fifo_heartbeat_is_stat_not_opened(working_dir: Path) -> None:
    beat = heartbeat(working_dir)
    beat.parent.mkdir()
    os.mkfifo(beat)
    os.utime(beat, (BEAT_AT, BEAT_AT))
    assert last_heartbeat(str(beat)) == BEAT_AT


def test_a_path_outside_a_heartbeat_dir_is_a_caller_bug(working_dir: Path) -> None:
    with pytest.raises(ValueError, match=r"not in a \.heartbeat directory"):
        last_heartbeat(str(working_dir / "train.a1"))
