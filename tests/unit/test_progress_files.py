"""Progress files: the gateway's reader (staging.progress_files) and the job's `sgw-progress` command.

The command is run here from a rendered batch script with bash, without Slurm, as in
tests/unit/test_batch_script.py; the reader runs on the files it wrote and on garbage.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from slurm import job_layout
from slurm.batch_job import BatchJob
from slurm.batch_script import render_batch_script
from staging.progress_files import (
    MESSAGE_MAX_CHARS,
    METRICS_MAX,
    TAIL_BYTES,
    Progress,
    latest_progress,
    parse_progress_line,
)


def progress_path(cwd: Path, step: str = "main", attempt: int = 1) -> Path:
    return Path(job_layout.progress_file(str(cwd), step, attempt))


def write_progress(cwd: Path, data: bytes, step: str = "main", attempt: int = 1) -> Path:
    path = progress_path(cwd, step, attempt)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def line(**fields: object) -> bytes:
    return json.dumps(fields).encode() + b"\n"


# --- the reader -------------------------------------------------------------------------


def test_no_file_is_no_progress(tmp_path: Path) -> None:
    assert latest_progress(str(tmp_path), "main", 1) is None
    assert latest_progress(str(tmp_path / "missing"), "main", 1) is None


def test_the_last_complete_line_wins(tmp_path: Path) -> None:
    write_progress(
        tmp_path,
        line(fraction=0.1, message="start")
        + line(fraction=0.5, message="half", metrics={"loss": 1.5, "step": 4})
        + b'{"fraction": 0.9, "mess',  # still being written: not read
    )
    assert latest_progress(str(tmp_path), "main", 1) == Progress(
        fraction=0.5, message="half", metrics={"loss": 1.5, "step": 4.0}
    )


def test_each_attempt_and_step_has_its_own_file(tmp_path: Path) -> None:
    write_progress(tmp_path, line(fraction=0.2), step="train", attempt=2)
    assert latest_progress(str(tmp_path), "train", 2) == Progress(fraction=0.2)
    assert latest_progress(str(tmp_path), "train", 1) is None
    assert latest_progress(str(tmp_path), "main", 2) is None


@pytest.mark.parametrize(
    "garbage",
    [
        b"not json\n",
        b"[1, 2]\n",
        b'"a string"\n',
        b"{}\n",
        b'{"fraction": "half", "message": 7, "metrics": [1]}\n',
        b'{"fraction": NaN}\n',
        b"\xff\xfe{\n",
        b"[" * 30_000 + b"\n",  # deeper than any parser recursion
        b'{"fraction": 0.5' + b"\0" * 10 + b"}\n",
        b"\n\n\n",
    ],
)
def test_a_malformed_last_line_falls_back_to_the_previous_valid_one(tmp_path: Path, garbage: bytes) -> None:
    write_progress(tmp_path, line(fraction=0.3, message="ok") + garbage)
    assert latest_progress(str(tmp_path), "main", 1) == Progress(fraction=0.3, message="ok")


def test_only_garbage_is_no_progress(tmp_path: Path) -> None:
    write_progress(tmp_path, b"\x00\x01garbage\n{{{\n" + os.urandom(4096) + b"\n")
    assert latest_progress(str(tmp_path), "main", 1) is None


@pytest.mark.parametrize(
    ("fraction", "expected"),
    [
        ("-3", 0.0),
        ("0", 0.0),
        ("0.25", 0.25),
        ("1", 1.0),
        ("7.5", 1.0),
        ("true", None),
        ("null", None),
        ('"0.5"', None),
    ],
)
def test_the_fraction_is_clamped_to_0_1(fraction: str, expected: float | None) -> None:
    parsed = parse_progress_line(b'{"message": "m", "fraction": %s}' % fraction.encode())
    assert parsed == Progress(fraction=expected, message="m")


def test_numbers_beyond_a_float_are_not_numbers() -> None:
    assert parse_progress_line(b'{"fraction": 1e400, "message": "m"}') is None
    assert (
        parse_progress_line(b'{"fraction": 1' + b"0" * 400 + b', "metrics": {"a": 1' + b"0" * 400 + b"}}")
        is None
    )


def test_the_message_loses_control_characters_and_is_cut() -> None:
    parsed = parse_progress_line(json.dumps({"message": "a\x1b[31mb\tc\nd\x7fe ✓ 日本"}).encode())
    assert parsed == Progress(message="a[31mbcde ✓ 日本")
    long = parse_progress_line(json.dumps({"message": "x" * 100_000}).encode())
    assert long is not None and long.message == "x" * MESSAGE_MAX_CHARS
    assert parse_progress_line(json.dumps({"message": "\x00\x01", "fraction": 0.5}).encode()) == Progress(
        fraction=0.5
    )


def test_metrics_keep_short_names_and_finite_numbers_only() -> None:
    metrics = {
        "loss": 0.31,
        "acc/top-1": 0.9,
        "bad name": 1,
        "": 1,
        "x" * 65: 1,
        "flag": True,
        "text": "1.0",
        "nested": {"a": 1},
        "null": None,
    }
    parsed = parse_progress_line(json.dumps({"metrics": metrics}).encode())
    assert parsed == Progress(metrics={"loss": 0.31, "acc/top-1": 0.9})
    many = parse_progress_line(json.dumps({"metrics": {f"m{i}": i for i in range(1000)}}).encode())
    assert many is not None and many.metrics == {f"m{i}": float(i) for i in range(METRICS_MAX)}


def test_only_the_tail_is_read(tmp_path: Path) -> None:
    # A valid line far from the end is never seen, however large the file: only the last
    # TAIL_BYTES are read, and the cut line at their start is not taken.
    head = line(fraction=0.1, message="early")
    filler = b"x" * (TAIL_BYTES * 4) + b"\n"
    write_progress(tmp_path, head + filler)
    assert latest_progress(str(tmp_path), "main", 1) is None
    cut = line(fraction=0.2, message="cut" + "y" * TAIL_BYTES)
    write_progress(tmp_path, cut + line(fraction=0.7))
    assert latest_progress(str(tmp_path), "main", 1) == Progress(fraction=0.7)
    write_progress(tmp_path, head + b"z" * (TAIL_BYTES - 10) + b"\n")
    assert latest_progress(str(tmp_path), "main", 1) is None


def test_a_symlinked_file_or_directory_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(line(fraction=0.99, message="root's file"))
    work = tmp_path / "work"
    link = progress_path(work)
    link.parent.mkdir(parents=True)
    link.symlink_to(secret)
    assert latest_progress(str(work), "main", 1) is None

    elsewhere = tmp_path / "elsewhere"
    write_progress(elsewhere, line(fraction=0.99))
    link.unlink()
    link.parent.rmdir()
    link.parent.symlink_to(progress_path(elsewhere).parent)
    assert latest_progress(str(work), "main", 1) is None

    linked_work = tmp_path / "linked-work"
    linked_work.symlink_to(elsewhere)
    assert latest_progress(str(linked_work), "main", 1) is None


def test_a_fifo_or_directory_is_not_read(tmp_path: Path) -> None:
    path = progress_path(tmp_path)
    path.parent.mkdir(parents=True)
    os.mkfifo(path)
    assert latest_progress(str(tmp_path), "main", 1) is None  # and it did not block
    path.unlink()
    path.mkdir()
    assert latest_progress(str(tmp_path), "main", 1) is None


# --- the job's command ------------------------------------------------------------------


def make_job(cwd: Path, script: str, **changes: Any) -> BatchJob:
    fields: dict[str, Any] = {
        "gateway_job_id": "01J0PROGRESS",
        "name": "train",
        "unix_user": "alice",
        "account": "physics",
        "partition": "cpu",
        "working_dir": str(cwd),
        "time_limit_minutes": 30,
        "command": None,
        "script": script,
    }
    fields.update(changes)
    return BatchJob(**fields)


def run_script(job: BatchJob) -> subprocess.CompletedProcess[str]:
    """The rendered script, run with bash in the job's working dir."""
    path = Path(job.working_dir) / "job.sh"
    path.write_text(render_batch_script(job))
    return subprocess.run(
        ["bash", str(path)],
        cwd=job.working_dir,
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
        env={"PATH": "/usr/bin:/bin"},
    )


def test_sgw_progress_writes_json_lines_the_reader_takes(tmp_path: Path) -> None:
    script = """
sgw-progress 0.4 "epoch 4/10" loss=0.31 acc=0.9
bash -c 'sgw-progress 0.5 "from a child"'
python3 -c 'import subprocess; subprocess.run(["bash", "-c", "sgw-progress - grandchild n=-1e-3"])'
python3 -c 'import json, os
open(os.environ["SGW_PROGRESS_FILE"], "a").write(json.dumps({"fraction": 0.75}) + "\\n")'
"""
    result = run_script(make_job(tmp_path, script, step_name="train", attempt=3))
    assert result.returncode == 0, result.stderr
    lines = progress_path(tmp_path, "train", 3).read_text().splitlines()
    assert [json.loads(text) for text in lines] == [
        {"fraction": 0.4, "message": "epoch 4/10", "metrics": {"loss": 0.31, "acc": 0.9}},
        {"fraction": 0.5, "message": "from a child", "metrics": {}},
        {"fraction": None, "message": "grandchild", "metrics": {"n": -0.001}},
        {"fraction": 0.75},
    ]
    assert latest_progress(str(tmp_path), "train", 3) == Progress(fraction=0.75)


def test_sgw_progress_escapes_any_message(tmp_path: Path) -> None:
    script = r"""msg=$'q"uote \\back $(touch CANARY) `touch CANARY` tab\there\nnew\001\037 ✓ 日本'
sgw-progress 1 "$msg" x=1
sgw-progress 0.5 m 'n=$(touch CANARY)' || echo refused
"""
    result = run_script(make_job(tmp_path, script))
    assert result.returncode == 0, result.stderr
    text = progress_path(tmp_path).read_text()
    expected = 'q"uote \\back $(touch CANARY) `touch CANARY` tab here new ✓ 日本'
    assert [json.loads(part) for part in text.splitlines()] == [
        {"fraction": 1, "message": expected, "metrics": {"x": 1}}
    ]
    assert (result.stdout, result.stderr) == (
        "refused\n",
        "sgw-progress: not NAME=NUMBER: n=$(touch CANARY)\n",
    )
    assert not list(tmp_path.glob("CANARY*"))


@pytest.mark.parametrize(
    "arguments",
    ["", "abc", "007", ".5", "0.5 m bad", "0.5 m 'a b=1'", "0.5 m 'a=1;x'", "0.5 m a==1", "'0.5,1'"],
)
def test_sgw_progress_refuses_bad_input_and_writes_nothing(tmp_path: Path, arguments: str) -> None:
    result = run_script(make_job(tmp_path, f"sgw-progress {arguments}\necho status=$?\n"))
    assert result.stdout == "status=2\n"
    assert progress_path(tmp_path).parent.is_dir()
    assert not progress_path(tmp_path).exists()
