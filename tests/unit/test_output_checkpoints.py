"""Recording and re-verifying an attempt's outputs on a real filesystem, as root would read it.

Attempt directories are built the way the job builds them: files written into out/, the manifest
produced by the real sha256sum from out/, then outputs/<step> published by renaming a symlink.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from slurm.job_layout import (
    attempt_dir,
    attempt_output_dir,
    outputs_dir,
    published_link,
    published_link_target,
)
from staging.output_checkpoints import (
    MAX_MANIFEST_BYTES,
    MAX_MANIFEST_ENTRIES,
    OutputFile,
    OutputsUnreadable,
    _has_digest,
    read_attempt_outputs,
    verify_published_outputs,
)

STEP = "train"
FILES = {
    "model/weights.bin": os.urandom(2 * 1024 * 1024 + 17),  # more than one 1 MiB hash chunk
    "metrics.json": b'{"loss": 0.1}\n',
    "empty": b"",
}
SECRET = b"root:$y$j9T$not-for-users:19000:0:99999:7:::\n"
ZERO_DIGEST = "0" * 64


def write_outputs(working_dir: Path, attempt: int, files: dict[str, bytes]) -> Path:
    out = Path(attempt_output_dir(str(working_dir), STEP, attempt))
    for relative, content in files.items():
        (out / relative).parent.mkdir(parents=True, exist_ok=True)
        (out / relative).write_bytes(content)
    out.mkdir(parents=True, exist_ok=True)
    return out


def run_sha256sum(out: Path, manifest: Path, start: str = ".") -> None:
    """The job's own manifest step: sha256sum over every file below ``start``, run from out/."""
    with manifest.open("wb") as sink:
        subprocess.run(
            ["sh", "-c", 'find "$1" -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum', "sh", start],
            cwd=out,
            stdout=sink,
            check=True,
        )


def make_attempt(working_dir: Path, attempt: int = 1, files: dict[str, bytes] = FILES) -> Path:
    out = write_outputs(working_dir, attempt, files)
    run_sha256sum(out, Path(attempt_dir(str(working_dir), STEP, attempt)) / "manifest.sha256")
    return out


def publish(working_dir: Path, attempt: int) -> None:
    Path(outputs_dir(str(working_dir))).mkdir(exist_ok=True)
    staged = Path(outputs_dir(str(working_dir))) / f".{STEP}.new"
    staged.symlink_to(published_link_target(STEP, attempt))
    staged.replace(published_link(str(working_dir), STEP))


def manifest_path(working_dir: Path, attempt: int = 1) -> Path:
    return Path(attempt_dir(str(working_dir), STEP, attempt)) / "manifest.sha256"


def write_manifest(working_dir: Path, lines: list[bytes], attempt: int = 1) -> None:
    manifest_path(working_dir, attempt).write_bytes(b"".join(line + b"\n" for line in lines))


def unreadable_message(working_dir: Path, attempt: int = 1) -> str:
    with pytest.raises(OutputsUnreadable) as refused:
        read_attempt_outputs(str(working_dir), STEP, attempt)
    assert "\n" not in refused.value.message
    return refused.value.message


@contextmanager
def fails_if_blocked(seconds: float) -> Iterator[None]:
    """A blocking open (a FIFO without writer) fails the test instead of hanging it."""

    def interrupt(signum: int, frame: object) -> None:
        raise TimeoutError("blocked")

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    """Stands in for /etc/shadow: a file outside the job dir that root must never read for a user."""
    path = tmp_path / "shadow"
    path.write_bytes(SECRET)
    path.chmod(0o600)
    return path


@pytest.fixture
def working_dir(tmp_path: Path) -> Path:
    path = tmp_path / "job"
    path.mkdir()
    return path


def expected_outputs(files: dict[str, bytes]) -> list[OutputFile]:
    return sorted(
        (
            OutputFile(path=path, sha256=hashlib.sha256(content).hexdigest(), size=len(content))
            for path, content in files.items()
        ),
        key=lambda output: output.path,
    )


# --- recording an attempt's outputs ---


def test_plain_manifest_is_read_with_sizes_sorted_by_path(working_dir: Path) -> None:
    make_attempt(working_dir)
    assert read_attempt_outputs(str(working_dir), STEP, 1) == expected_outputs(FILES)


def test_array_manifests_of_every_task_are_read_together(working_dir: Path) -> None:
    tasks = {task: {f"{task}/part.csv": f"task,{task}\n".encode()} for task in (0, 1, 10)}
    for task, files in tasks.items():
        out = write_outputs(working_dir, 1, files)
        run_sha256sum(
            out, Path(attempt_dir(str(working_dir), STEP, 1)) / f"manifest.{task}.sha256", f"./{task}"
        )
    outputs = read_attempt_outputs(str(working_dir), STEP, 1)
    assert [output.path for output in outputs] == ["0/part.csv", "1/part.csv", "10/part.csv"]
    assert outputs == expected_outputs(
        {path: data for files in tasks.values() for path, data in files.items()}
    )


def test_an_attempt_without_outputs_has_an_empty_manifest(working_dir: Path) -> None:
    make_attempt(working_dir, files={})
    assert manifest_path(working_dir).read_bytes() == b""
    assert read_attempt_outputs(str(working_dir), STEP, 1) == []


def test_no_manifest_is_refused(working_dir: Path) -> None:
    write_outputs(working_dir, 1, FILES)
    assert "has no manifest.sha256" in unreadable_message(working_dir)


def test_plain_and_per_task_manifests_together_are_refused(working_dir: Path) -> None:
    out = make_attempt(working_dir)
    run_sha256sum(out, Path(attempt_dir(str(working_dir), STEP, 1)) / "manifest.0.sha256")
    assert "both manifest.sha256 and per-task manifests" in unreadable_message(working_dir)


def test_a_file_listed_by_two_task_manifests_is_refused(working_dir: Path) -> None:
    out = write_outputs(working_dir, 1, {"shared.bin": b"x"})
    for task in (0, 1):
        run_sha256sum(out, Path(attempt_dir(str(working_dir), STEP, 1)) / f"manifest.{task}.sha256")
    assert "manifest.1.sha256 line 1: shared.bin is listed twice" in unreadable_message(working_dir)


@pytest.mark.parametrize(
    "planted",
    [
        "out/model/weights.bin",  # the listed file itself
        "out/model",  # a directory on the way to it
        "out",
        "",  # the attempt directory a1
    ],
)
def test_a_symlink_planted_below_the_attempt_is_refused(
    working_dir: Path, tmp_path: Path, secret: Path, planted: str
) -> None:
    make_attempt(working_dir)
    victim = Path(attempt_dir(str(working_dir), STEP, 1)) / planted
    # The link leads to a real copy, so following it would have succeeded.
    decoy = tmp_path / "decoy"
    victim.rename(decoy)
    victim.symlink_to(decoy)
    shown = f".attempts/{STEP}/a1/{planted}".rstrip("/")
    assert unreadable_message(working_dir) == f"{shown} is a symlink"


def test_a_symlink_to_a_secret_file_is_never_sized(working_dir: Path, secret: Path) -> None:
    out = make_attempt(working_dir)
    (out / "metrics.json").unlink()
    (out / "metrics.json").symlink_to(secret)
    message = unreadable_message(working_dir)
    assert message == f".attempts/{STEP}/a1/out/metrics.json is a symlink"
    assert str(secret) not in message


def test_attempts_dir_as_a_symlink_is_refused(working_dir: Path, tmp_path: Path) -> None:
    make_attempt(working_dir)
    (working_dir / ".attempts").rename(tmp_path / "elsewhere")
    (working_dir / ".attempts").symlink_to(tmp_path / "elsewhere")
    assert unreadable_message(working_dir) == ".attempts is a symlink"


def test_the_manifest_as_a_symlink_is_refused(working_dir: Path, secret: Path) -> None:
    make_attempt(working_dir)
    manifest_path(working_dir).unlink()
    manifest_path(working_dir).symlink_to(secret)
    assert unreadable_message(working_dir) == f".attempts/{STEP}/a1/manifest.sha256 is a symlink"


def test_a_working_dir_that_is_a_symlink_is_refused(working_dir: Path, tmp_path: Path) -> None:
    make_attempt(working_dir)
    link = tmp_path / "job-link"
    link.symlink_to(working_dir)
    with pytest.raises(OutputsUnreadable, match=r"^the working directory is a symlink$"):
        read_attempt_outputs(str(link), STEP, 1)


def test_a_listed_fifo_is_refused_without_blocking(working_dir: Path) -> None:
    out = make_attempt(working_dir)
    os.mkfifo(out / "pipe")
    with manifest_path(working_dir).open("ab") as manifest:
        manifest.write(ZERO_DIGEST.encode() + b"  ./pipe\n")
    with fails_if_blocked(5):
        message = unreadable_message(working_dir)
    assert message == f".attempts/{STEP}/a1/out/pipe is not a regular file"


def test_a_fifo_as_the_manifest_is_refused_without_blocking(working_dir: Path) -> None:
    make_attempt(working_dir)
    manifest_path(working_dir).unlink()
    os.mkfifo(manifest_path(working_dir))
    with fails_if_blocked(5):
        message = unreadable_message(working_dir)
    assert message == f".attempts/{STEP}/a1/manifest.sha256 is not a regular file"


def test_a_listed_directory_or_missing_file_is_refused(working_dir: Path) -> None:
    make_attempt(working_dir)
    write_manifest(working_dir, [ZERO_DIGEST.encode() + b"  ./model"])
    assert unreadable_message(working_dir).endswith("out/model is not a regular file")
    write_manifest(working_dir, [ZERO_DIGEST.encode() + b"  ./model/gone.bin"])
    assert unreadable_message(working_dir) == f".attempts/{STEP}/a1/out/model/gone.bin is missing"


def test_sha256sums_escaped_lines_are_refused(working_dir: Path) -> None:
    make_attempt(working_dir, files={"back\\slash.txt": b"a", "new\nline.txt": b"b"})
    # The real sha256sum escapes such names with a leading backslash.
    assert manifest_path(working_dir).read_bytes().startswith(b"\\")
    assert "line 1: escaped file name" in unreadable_message(working_dir)


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (b"not a manifest line", "line 2: not in sha256sum's '<sha256>  ./<path>' form"),
        (ZERO_DIGEST.encode() + b" *./metrics.json", "line 2: not in sha256sum's"),  # binary mode mark
        (b"abc  ./metrics.json", "line 2: not in sha256sum's"),
        (b"", "line 2: not in sha256sum's"),
        (ZERO_DIGEST.encode() + b"  /etc/shadow", "line 2: absolute path"),
        (ZERO_DIGEST.encode() + b"  metrics.json", "line 2: path does not start with ./"),
        (ZERO_DIGEST.encode() + b"  ./../../shadow", "line 2: '..' in a path"),
        (ZERO_DIGEST.encode() + b"  ./model/../metrics.json", "line 2: '..' in a path"),
        (ZERO_DIGEST.encode() + b"  ./model//weights.bin", "line 2: empty or '.' path component"),
        (ZERO_DIGEST.encode() + b"  ./model/./weights.bin", "line 2: empty or '.' path component"),
        (ZERO_DIGEST.encode() + b"  ./", "line 2: empty or '.' path component"),
        (ZERO_DIGEST.encode() + b"  ./tab\there", "line 2: control character in a file name"),
        (ZERO_DIGEST.encode() + b"  ./carriage\rreturn", "line 2: control character in a file name"),
        (ZERO_DIGEST.encode() + b"  ./latin\xe9", "line 2: file name is not UTF-8"),
        (ZERO_DIGEST.encode() + b"  ./empty", "line 2: empty is listed twice"),
    ],
)
def test_malformed_manifest_lines_are_refused_with_their_line_number(
    working_dir: Path, line: bytes, problem: str
) -> None:
    make_attempt(working_dir, files={"empty": b""})
    write_manifest(working_dir, [manifest_path(working_dir).read_bytes().rstrip(b"\n"), line])
    message = unreadable_message(working_dir)
    assert message.startswith(f".attempts/{STEP}/a1/manifest.sha256 {problem}")


def test_a_manifest_cut_short_is_refused(working_dir: Path) -> None:
    make_attempt(working_dir)
    manifest_path(working_dir).write_bytes(manifest_path(working_dir).read_bytes()[:-1])
    assert "does not end with a newline" in unreadable_message(working_dir)


def test_an_oversized_manifest_is_refused_before_it_is_read(working_dir: Path) -> None:
    make_attempt(working_dir)
    # Sparse: refused on its size alone, whatever it holds.
    os.truncate(manifest_path(working_dir), MAX_MANIFEST_BYTES + 1)
    assert "manifest.sha256 is too large" in unreadable_message(working_dir)


def test_task_manifests_share_one_size_budget(working_dir: Path) -> None:
    make_attempt(working_dir, files={})
    attempt = Path(attempt_dir(str(working_dir), STEP, 1))
    manifest_path(working_dir).unlink()
    # Task 0: well-formed lines (long names, few entries) filling half the budget and a bit.
    long_name = "/".join(["d" * 200] * 19)
    line = b"%s  ./%s/%%d\n" % (ZERO_DIGEST.encode(), long_name.encode())
    lines = [line % n for n in range(MAX_MANIFEST_BYTES // 2 // len(line) + 1)]
    (attempt / "manifest.0.sha256").write_bytes(b"".join(lines))
    assert (attempt / "manifest.0.sha256").stat().st_size > MAX_MANIFEST_BYTES // 2
    (attempt / "manifest.1.sha256").touch()
    os.truncate(attempt / "manifest.1.sha256", MAX_MANIFEST_BYTES // 2)
    assert "manifest.1.sha256 is too large" in unreadable_message(working_dir)


def test_more_than_the_maximum_entries_are_refused(working_dir: Path) -> None:
    make_attempt(working_dir, files={})
    write_manifest(
        working_dir, [b"%s  ./f%d" % (ZERO_DIGEST.encode(), n) for n in range(MAX_MANIFEST_ENTRIES + 1)]
    )
    assert f"lists more than {MAX_MANIFEST_ENTRIES} files" in unreadable_message(working_dir)


def test_a_step_name_that_is_not_one_path_component_is_a_caller_bug(working_dir: Path) -> None:
    with pytest.raises(ValueError, match="not a single path component"):
        read_attempt_outputs(str(working_dir), "../train", 1)


# --- verifying the published outputs before a retry skips the step ---


@pytest.fixture
def published(working_dir: Path) -> list[OutputFile]:
    make_attempt(working_dir, attempt=1)
    make_attempt(working_dir, attempt=2, files={"other.bin": b"attempt 2"})
    publish(working_dir, 1)
    return read_attempt_outputs(str(working_dir), STEP, 1)


def test_intact_published_outputs_verify(working_dir: Path, published: list[OutputFile]) -> None:
    assert verify_published_outputs(str(working_dir), STEP, 1, published) is None


def test_a_changed_byte_is_found_by_its_digest(working_dir: Path, published: list[OutputFile]) -> None:
    weights = Path(attempt_output_dir(str(working_dir), STEP, 1)) / "model" / "weights.bin"
    content = bytearray(weights.read_bytes())
    content[-1] ^= 0xFF  # past the first hash chunk, same size
    weights.write_bytes(bytes(content))
    reason = verify_published_outputs(str(working_dir), STEP, 1, published)
    assert reason == "outputs/train/model/weights.bin changed (sha256 differs)"


def test_a_changed_size_is_found_without_hashing(working_dir: Path, published: list[OutputFile]) -> None:
    with (Path(attempt_output_dir(str(working_dir), STEP, 1)) / "metrics.json").open("ab") as metrics:
        metrics.write(b"more\n")
    reason = verify_published_outputs(str(working_dir), STEP, 1, published)
    assert reason == "outputs/train/metrics.json changed (size differs)"


def test_a_deleted_file_is_reported_missing(working_dir: Path, published: list[OutputFile]) -> None:
    (Path(attempt_output_dir(str(working_dir), STEP, 1)) / "metrics.json").unlink()
    reason = verify_published_outputs(str(working_dir), STEP, 1, published)
    assert reason == "outputs/train/metrics.json is missing"


def test_a_file_replaced_by_a_symlink_is_not_followed(
    working_dir: Path, published: list[OutputFile], secret: Path
) -> None:
    weights = Path(attempt_output_dir(str(working_dir), STEP, 1)) / "model" / "weights.bin"
    weights.unlink()
    weights.symlink_to(secret)
    reason = verify_published_outputs(str(working_dir), STEP, 1, published)
    assert reason == "outputs/train/model/weights.bin is a symlink"


def test_a_link_repointed_to_another_attempt_is_reported(
    working_dir: Path, published: list[OutputFile]
) -> None:
    publish(working_dir, 2)
    reason = verify_published_outputs(str(working_dir), STEP, 1, published)
    assert reason == "outputs/train points at another attempt"


def test_a_link_replaced_by_a_real_directory_is_reported(
    working_dir: Path, published: list[OutputFile]
) -> None:
    link = Path(published_link(str(working_dir), STEP))
    link.unlink()
    link.mkdir()
    reason = verify_published_outputs(str(working_dir), STEP, 1, published)
    assert reason == "outputs/train is a directory, not a link to the published attempt"


def test_an_unpublished_step_is_reported(working_dir: Path, published: list[OutputFile]) -> None:
    Path(published_link(str(working_dir), STEP)).unlink()
    reason = verify_published_outputs(str(working_dir), STEP, 1, published)
    assert reason == "outputs/train is missing"


def test_a_symlinked_attempts_dir_fails_verification(
    working_dir: Path, tmp_path: Path, published: list[OutputFile]
) -> None:
    (working_dir / ".attempts").rename(tmp_path / "elsewhere")
    (working_dir / ".attempts").symlink_to(tmp_path / "elsewhere")
    reason = verify_published_outputs(str(working_dir), STEP, 1, published)
    assert reason == ".attempts is a symlink"


def test_a_fifo_in_place_of_a_file_fails_verification_without_blocking(
    working_dir: Path, published: list[OutputFile]
) -> None:
    metrics = Path(attempt_output_dir(str(working_dir), STEP, 1)) / "metrics.json"
    metrics.unlink()
    os.mkfifo(metrics)
    with fails_if_blocked(5):
        reason = verify_published_outputs(str(working_dir), STEP, 1, published)
    assert reason == "outputs/train/metrics.json is not a regular file"


def test_a_file_that_grew_past_its_recorded_size_never_matches(working_dir: Path) -> None:
    # Guards the race between the size check and hashing (private helper): reading stops at the
    # recorded size and a longer file never matches, even when its first bytes do.
    whole = b"recorded part and what came later"
    out = make_attempt(working_dir, files={"log.txt": whole})
    prefix = b"recorded part"
    recorded = OutputFile(path="log.txt", sha256=hashlib.sha256(prefix).hexdigest(), size=len(prefix))
    fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert _has_digest(fd, recorded, ["outputs/train"]) is False
        intact = OutputFile(path="log.txt", sha256=hashlib.sha256(whole).hexdigest(), size=len(whole))
        assert _has_digest(fd, intact, ["outputs/train"]) is True
    finally:
        os.close(fd)


def test_upper_case_digests_are_recorded_in_lower_case(working_dir: Path) -> None:
    make_attempt(working_dir, files={"empty": b""})
    digest = hashlib.sha256(b"").hexdigest()
    write_manifest(working_dir, [digest.upper().encode() + b"  ./empty"])
    assert read_attempt_outputs(str(working_dir), STEP, 1) == [
        OutputFile(path="empty", sha256=digest, size=0)
    ]


def test_no_file_descriptor_is_left_open(
    working_dir: Path, published: list[OutputFile], secret: Path
) -> None:
    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    before = open_fds()
    assert verify_published_outputs(str(working_dir), STEP, 1, published) is None
    weights = Path(attempt_output_dir(str(working_dir), STEP, 1)) / "model" / "weights.bin"
    weights.unlink()
    weights.symlink_to(secret)
    assert verify_published_outputs(str(working_dir), STEP, 1, published) is not None
    with pytest.raises(OutputsUnreadable):
        read_attempt_outputs(str(working_dir), STEP, 1)
    assert read_attempt_outputs(str(working_dir), STEP, 2) != []
    assert open_fds() == before
