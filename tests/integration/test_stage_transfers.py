"""Stage-in and stage-out between real object storage (a directory, SeaweedFS S3) and real job
directories owned by the Unix user alice, with the gateway's privileges (these tests run as root).

Attempt directories are laid out by hand the way the batch script leaves them: files in
``.attempts/main/a1/out/``, the manifest written by the real sha256sum, everything alice's.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from slurm.job_layout import DEFAULT_STEP_NAME, attempt_dir, attempt_output_dir
from staging.object_store import ObjectStore, ObjectStoreSettings
from staging.output_checkpoints import OutputFile, read_attempt_outputs
from staging.stage_in import PARTIAL_PREFIX, StagedFile, StageInRefused, write_into_working_dir
from staging.stage_out import StageOutRefused, read_output_chunks, select_outputs
from staging.storage_errors import DigestMismatch, ObjectMissing, SizeLimitExceeded
from staging.transfer_limits import TokenBucket, throttled
from tests.integration.conftest import Storage

pytestmark = pytest.mark.integration

STEP = DEFAULT_STEP_NAME
CONTENT = os.urandom(3 * 1024 * 1024 + 11)  # several read chunks below
SECRET = b"root:$y$j9T$not-for-users:19000:0:99999:7:::\n"
SMALL_CHUNK = 1024 * 1024


@pytest.fixture
def store(storage: Storage, request: pytest.FixtureRequest) -> ObjectStore:
    if "s3" in storage.fs.protocol:
        s3 = request.getfixturevalue("s3_settings")
        return ObjectStore(
            ObjectStoreSettings(
                url=f"s3://{storage.root}",
                endpoint_url=s3.endpoint,
                region="us-east-1",
                access_key_id=s3.key,
                secret_access_key=s3.secret,
            )
        )
    return ObjectStore(ObjectStoreSettings(url=f"file://{storage.root}"))


@pytest.fixture
def alice() -> pwd.struct_passwd:
    return pwd.getpwnam("alice")


@pytest.fixture
def working_dir(tmp_path: Path, alice: pwd.struct_passwd) -> Path:
    """A job's working directory, alice's, as the gateway's admission leaves it."""
    directory = tmp_path / "job"
    directory.mkdir(mode=0o750)
    os.chown(directory, alice.pw_uid, alice.pw_gid)
    return directory


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    """A directory outside the job's, root's own, that a planted link points at."""
    directory = tmp_path / "elsewhere"
    directory.mkdir()
    return directory


def put_blob(store: ObjectStore, content: bytes) -> tuple[str, str]:
    key = store.new_blob_key("tenant-a")
    with store.writer(key) as writer:
        writer.write(content)
        info = writer.finish()
    return key, info.sha256


def stage_in(
    store: ObjectStore,
    key: str,
    working_dir: Path,
    path: str,
    owner: pwd.struct_passwd,
    *,
    expected_sha256: str | None,
    max_bytes: int | None = None,
) -> StagedFile:
    return write_into_working_dir(
        store.read_chunks(key, chunk_bytes=SMALL_CHUNK),
        str(working_dir),
        path,
        uid=owner.pw_uid,
        gid=owner.pw_gid,
        expected_sha256=expected_sha256,
        max_bytes=max_bytes,
    )


def leftovers(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob(f"{PARTIAL_PREFIX}*"))


def all_entries(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


# --- stage-in ------------------------------------------------------------------------------------


def test_stage_in_writes_the_blob_as_a_file_of_the_jobs_user(
    store: ObjectStore, working_dir: Path, alice: pwd.struct_passwd
) -> None:
    key, digest = put_blob(store, CONTENT)
    staged = stage_in(store, key, working_dir, "data/train/input.bin", alice, expected_sha256=digest.upper())
    assert staged == StagedFile(path="data/train/input.bin", size=len(CONTENT), sha256=digest)
    target = working_dir / "data" / "train" / "input.bin"
    assert target.read_bytes() == CONTENT
    info = target.lstat()
    assert stat.S_ISREG(info.st_mode)
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (alice.pw_uid, alice.pw_gid, 0o640)
    for created in (working_dir / "data", working_dir / "data" / "train"):
        info = created.lstat()
        assert stat.S_ISDIR(info.st_mode)
        assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (alice.pw_uid, alice.pw_gid, 0o750)
    assert leftovers(working_dir) == []


def test_stage_in_of_an_empty_blob_writes_an_empty_file(
    store: ObjectStore, working_dir: Path, alice: pwd.struct_passwd
) -> None:
    key, digest = put_blob(store, b"")
    staged = stage_in(store, key, working_dir, "empty", alice, expected_sha256=digest)
    assert staged.size == 0
    assert (working_dir / "empty").read_bytes() == b""


def test_stage_in_keeps_existing_directories_as_the_user_made_them(
    store: ObjectStore, working_dir: Path, alice: pwd.struct_passwd
) -> None:
    existing = working_dir / "data"
    existing.mkdir(mode=0o700)
    os.chown(existing, alice.pw_uid, alice.pw_gid)
    key, digest = put_blob(store, b"rows\n")
    stage_in(store, key, working_dir, "data/input.csv", alice, expected_sha256=digest)
    assert stat.S_IMODE(existing.lstat().st_mode) == 0o700
    assert (existing / "input.csv").read_bytes() == b"rows\n"


def test_stage_in_replaces_an_existing_file(
    store: ObjectStore, working_dir: Path, alice: pwd.struct_passwd
) -> None:
    (working_dir / "input.csv").write_bytes(b"old contents that are longer than the new ones\n")
    key, digest = put_blob(store, b"new\n")
    stage_in(store, key, working_dir, "input.csv", alice, expected_sha256=digest)
    assert (working_dir / "input.csv").read_bytes() == b"new\n"


def test_stage_in_replaces_a_symlink_at_the_destination_without_writing_through_it(
    store: ObjectStore, working_dir: Path, elsewhere: Path, alice: pwd.struct_passwd
) -> None:
    victim = elsewhere / "shadow"
    victim.write_bytes(SECRET)
    (working_dir / "input.csv").symlink_to(victim)
    key, digest = put_blob(store, b"new\n")
    stage_in(store, key, working_dir, "input.csv", alice, expected_sha256=digest)
    assert victim.read_bytes() == SECRET
    assert not (working_dir / "input.csv").is_symlink()
    assert (working_dir / "input.csv").read_bytes() == b"new\n"


@pytest.mark.parametrize("link_at", ["data", "data/train"])
def test_a_symlinked_parent_directory_is_refused_and_nothing_is_written_through_it(
    store: ObjectStore, working_dir: Path, elsewhere: Path, alice: pwd.struct_passwd, link_at: str
) -> None:
    if link_at == "data/train":
        (working_dir / "data").mkdir()
    (working_dir / link_at).symlink_to(elsewhere, target_is_directory=True)
    key, digest = put_blob(store, CONTENT)
    with pytest.raises(StageInRefused) as caught:
        stage_in(store, key, working_dir, "data/train/input.bin", alice, expected_sha256=digest)
    assert caught.value.message == f"{link_at} is a symlink (staging never follows links)"
    assert list(elsewhere.iterdir()) == []
    assert leftovers(working_dir) == []


def test_a_symlink_to_a_directory_as_the_destinations_parent_is_refused(
    store: ObjectStore, working_dir: Path, elsewhere: Path, alice: pwd.struct_passwd
) -> None:
    (working_dir / "inputs").symlink_to(elsewhere, target_is_directory=True)
    key, digest = put_blob(store, b"x")
    with pytest.raises(StageInRefused, match=r"^inputs is a symlink"):
        stage_in(store, key, working_dir, "inputs/x", alice, expected_sha256=digest)
    assert list(elsewhere.iterdir()) == []


def test_a_dangling_symlink_is_not_turned_into_a_directory(
    store: ObjectStore, working_dir: Path, elsewhere: Path, alice: pwd.struct_passwd
) -> None:
    (working_dir / "data").symlink_to(elsewhere / "not-yet")
    key, digest = put_blob(store, b"x")
    with pytest.raises(StageInRefused, match=r"^data is a symlink"):
        stage_in(store, key, working_dir, "data/x", alice, expected_sha256=digest)
    assert list(elsewhere.iterdir()) == []


def test_a_symlinked_working_directory_is_refused(
    store: ObjectStore, tmp_path: Path, elsewhere: Path, alice: pwd.struct_passwd
) -> None:
    link = tmp_path / "job-link"
    link.symlink_to(elsewhere)
    key, digest = put_blob(store, b"x")
    with pytest.raises(StageInRefused, match=r"^the working directory is a symlink"):
        stage_in(store, key, link, "x", alice, expected_sha256=digest)
    assert list(elsewhere.iterdir()) == []


def test_a_file_where_a_directory_should_be_is_refused(
    store: ObjectStore, working_dir: Path, alice: pwd.struct_passwd
) -> None:
    (working_dir / "data").write_bytes(b"a file")
    key, digest = put_blob(store, b"x")
    with pytest.raises(StageInRefused, match=r"^data is not a directory$"):
        stage_in(store, key, working_dir, "data/x", alice, expected_sha256=digest)
    assert (working_dir / "data").read_bytes() == b"a file"


def test_a_directory_at_the_destination_is_refused_and_kept(
    store: ObjectStore, working_dir: Path, alice: pwd.struct_passwd
) -> None:
    (working_dir / "data" / "input.csv").mkdir(parents=True)
    (working_dir / "data" / "input.csv" / "keep").write_bytes(b"kept")
    key, digest = put_blob(store, b"x")
    with pytest.raises(StageInRefused, match=r"^data/input\.csv is a directory"):
        stage_in(store, key, working_dir, "data/input.csv", alice, expected_sha256=digest)
    assert (working_dir / "data" / "input.csv" / "keep").read_bytes() == b"kept"
    assert leftovers(working_dir) == []


def test_a_digest_mismatch_leaves_nothing_and_keeps_the_previous_file(
    store: ObjectStore, working_dir: Path, alice: pwd.struct_passwd
) -> None:
    (working_dir / "kept.bin").write_bytes(b"previous")
    key, digest = put_blob(store, CONTENT)
    wrong = "0" * 64
    with pytest.raises(DigestMismatch) as caught:
        stage_in(store, key, working_dir, "new.bin", alice, expected_sha256=wrong)
    assert (caught.value.expected, caught.value.actual) == (wrong, digest)
    with pytest.raises(DigestMismatch):
        stage_in(store, key, working_dir, "kept.bin", alice, expected_sha256=wrong)
    assert all_entries(working_dir) == ["kept.bin"]
    assert (working_dir / "kept.bin").read_bytes() == b"previous"


def test_more_bytes_than_allowed_leave_nothing(
    store: ObjectStore, working_dir: Path, alice: pwd.struct_passwd
) -> None:
    key, _ = put_blob(store, CONTENT)
    with pytest.raises(SizeLimitExceeded):
        stage_in(store, key, working_dir, "big.bin", alice, expected_sha256=None, max_bytes=len(CONTENT) - 1)
    assert all_entries(working_dir) == []


def test_a_missing_blob_fails_the_stage_in_and_leaves_nothing(
    store: ObjectStore, working_dir: Path, alice: pwd.struct_passwd
) -> None:
    with pytest.raises(ObjectMissing):
        stage_in(store, store.new_blob_key("tenant-a"), working_dir, "data/x", alice, expected_sha256=None)
    # The parent directory was made before the first byte; no file, partial or not, is there.
    assert leftovers(working_dir) == []
    assert not (working_dir / "data" / "x").exists()


def test_a_failure_mid_stream_leaves_no_temporary_file(working_dir: Path, alice: pwd.struct_passwd) -> None:
    def failing_chunks() -> Iterator[bytes]:
        yield b"first chunk"
        raise ConnectionResetError("storage went away")

    with pytest.raises(ConnectionResetError):
        write_into_working_dir(
            failing_chunks(),
            str(working_dir),
            "x",
            uid=alice.pw_uid,
            gid=alice.pw_gid,
            expected_sha256=None,
            max_bytes=None,
        )
    assert all_entries(working_dir) == []


# --- stage-out -----------------------------------------------------------------------------------


ATTEMPT_FILES = {
    "model/weights.bin": CONTENT,
    "metrics.json": b'{"loss": 0.1}\n',
    "empty": b"",
}


def make_completed_attempt(working_dir: Path, owner: pwd.struct_passwd, attempt: int = 1) -> Path:
    """out/ and manifest.sha256 of a finished attempt, as alice's job leaves them."""
    out = Path(attempt_output_dir(str(working_dir), STEP, attempt))
    for relative, content in ATTEMPT_FILES.items():
        (out / relative).parent.mkdir(parents=True, exist_ok=True)
        (out / relative).write_bytes(content)
    with (Path(attempt_dir(str(working_dir), STEP, attempt)) / "manifest.sha256").open("wb") as manifest:
        subprocess.run(
            ["sh", "-c", "find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum"],
            cwd=out,
            stdout=manifest,
            check=True,
        )
    subprocess.run(["chown", "-R", f"{owner.pw_uid}:{owner.pw_gid}", str(working_dir)], check=True)
    return out


def stage_out(store: ObjectStore, working_dir: Path, output: OutputFile, attempt: int = 1) -> str:
    """The output uploaded into a new blob that must have the manifest's digest; its key."""
    key = store.new_blob_key("tenant-a")
    with store.writer(key, expected_sha256=output.sha256) as writer:
        for chunk in read_output_chunks(str(working_dir), STEP, attempt, output, chunk_bytes=SMALL_CHUNK):
            writer.write(chunk)
        writer.finish()
    return key


def test_stage_out_uploads_the_selected_outputs_verified_against_the_manifest(
    store: ObjectStore, working_dir: Path, alice: pwd.struct_passwd
) -> None:
    make_completed_attempt(working_dir, alice)
    selection = select_outputs(read_attempt_outputs(str(working_dir), STEP, 1), ["**"])
    assert [output.path for output in selection.files] == sorted(ATTEMPT_FILES)
    for output in selection.files:
        key = stage_out(store, working_dir, output)
        assert b"".join(store.read_chunks(key)) == ATTEMPT_FILES[output.path]
        blob = store.digest(key)
        assert (blob.size, blob.sha256) == (output.size, output.sha256)
        assert output.sha256 == hashlib.sha256(ATTEMPT_FILES[output.path]).hexdigest()


def test_an_output_swapped_for_a_symlink_after_the_manifest_is_refused(
    store: ObjectStore, working_dir: Path, elsewhere: Path, alice: pwd.struct_passwd
) -> None:
    out = make_completed_attempt(working_dir, alice)
    outputs = {output.path: output for output in read_attempt_outputs(str(working_dir), STEP, 1)}
    secret = elsewhere / "shadow"
    secret.write_bytes(SECRET)
    (out / "metrics.json").unlink()
    (out / "metrics.json").symlink_to(secret)
    with pytest.raises(StageOutRefused) as caught:
        list(read_output_chunks(str(working_dir), STEP, 1, outputs["metrics.json"]))
    assert caught.value.message == ".attempts/main/a1/out/metrics.json is a symlink"


def test_an_output_directory_swapped_for_a_symlink_is_refused(
    store: ObjectStore, working_dir: Path, elsewhere: Path, alice: pwd.struct_passwd
) -> None:
    out = make_completed_attempt(working_dir, alice)
    outputs = {output.path: output for output in read_attempt_outputs(str(working_dir), STEP, 1)}
    (out / "model").rename(elsewhere / "model")
    (out / "model").symlink_to(elsewhere / "model")
    with pytest.raises(StageOutRefused, match=r"^\.attempts/main/a1/out/model is a symlink$"):
        stage_out(store, working_dir, outputs["model/weights.bin"])


def test_an_output_whose_size_changed_after_the_manifest_is_refused(
    store: ObjectStore, working_dir: Path, alice: pwd.struct_passwd
) -> None:
    out = make_completed_attempt(working_dir, alice)
    outputs = {output.path: output for output in read_attempt_outputs(str(working_dir), STEP, 1)}
    with (out / "metrics.json").open("ab") as grown:
        grown.write(b"more\n")
    with pytest.raises(StageOutRefused, match=r"metrics\.json changed since the attempt recorded it"):
        stage_out(store, working_dir, outputs["metrics.json"])


def test_an_output_changed_in_place_fails_the_digest_and_leaves_no_blob(
    store: ObjectStore, working_dir: Path, alice: pwd.struct_passwd
) -> None:
    out = make_completed_attempt(working_dir, alice)
    outputs = {output.path: output for output in read_attempt_outputs(str(working_dir), STEP, 1)}
    (out / "metrics.json").write_bytes(b'{"loss": 9.9}\n')  # same size, other bytes
    key = store.new_blob_key("tenant-a")
    with (
        pytest.raises(DigestMismatch),
        store.writer(key, expected_sha256=outputs["metrics.json"].sha256) as w,
    ):
        for chunk in read_output_chunks(str(working_dir), STEP, 1, outputs["metrics.json"]):
            w.write(chunk)
        w.finish()
    with pytest.raises(ObjectMissing):
        store.size(key)


def test_a_fifo_in_place_of_an_output_is_refused_without_blocking(
    working_dir: Path, alice: pwd.struct_passwd
) -> None:
    out = make_completed_attempt(working_dir, alice)
    outputs = {output.path: output for output in read_attempt_outputs(str(working_dir), STEP, 1)}
    (out / "metrics.json").unlink()
    os.mkfifo(out / "metrics.json")
    with pytest.raises(StageOutRefused, match=r"metrics\.json is not a regular file"):
        list(read_output_chunks(str(working_dir), STEP, 1, outputs["metrics.json"]))


def test_a_missing_output_is_refused(working_dir: Path, alice: pwd.struct_passwd) -> None:
    out = make_completed_attempt(working_dir, alice)
    outputs = {output.path: output for output in read_attempt_outputs(str(working_dir), STEP, 1)}
    (out / "empty").unlink()
    with pytest.raises(StageOutRefused, match=r"^\.attempts/main/a1/out/empty is missing$"):
        list(read_output_chunks(str(working_dir), STEP, 1, outputs["empty"]))


def test_an_output_that_grows_while_it_is_read_is_refused(
    working_dir: Path, alice: pwd.struct_passwd
) -> None:
    out = make_completed_attempt(working_dir, alice)
    outputs = {output.path: output for output in read_attempt_outputs(str(working_dir), STEP, 1)}
    chunks = read_output_chunks(
        str(working_dir), STEP, 1, outputs["model/weights.bin"], chunk_bytes=SMALL_CHUNK
    )
    assert next(chunks) == CONTENT[:SMALL_CHUNK]
    with (out / "model" / "weights.bin").open("ab") as grown:
        grown.write(b"appended by the job after it finished")
    with pytest.raises(
        StageOutRefused, match=r"weights\.bin changed while it was read \(longer than recorded\)"
    ):
        list(chunks)


def test_an_output_truncated_while_it_is_read_is_refused(working_dir: Path, alice: pwd.struct_passwd) -> None:
    out = make_completed_attempt(working_dir, alice)
    outputs = {output.path: output for output in read_attempt_outputs(str(working_dir), STEP, 1)}
    chunks = read_output_chunks(
        str(working_dir), STEP, 1, outputs["model/weights.bin"], chunk_bytes=SMALL_CHUNK
    )
    assert next(chunks) == CONTENT[:SMALL_CHUNK]
    os.truncate(out / "model" / "weights.bin", SMALL_CHUNK + 10)
    with pytest.raises(
        StageOutRefused, match=r"weights\.bin changed while it was read \(shorter than recorded\)"
    ):
        list(chunks)


# --- bandwidth -----------------------------------------------------------------------------------


def test_a_throttled_stage_in_takes_at_least_the_time_the_rate_allows(
    store: ObjectStore, working_dir: Path, alice: pwd.struct_passwd
) -> None:
    size, rate, burst = 300_000, 400_000, 100_000
    content = os.urandom(size)
    key, digest = put_blob(store, content)
    bucket = TokenBucket(rate, burst)
    started = time.monotonic()
    write_into_working_dir(
        throttled(store.read_chunks(key, chunk_bytes=20_000), bucket),
        str(working_dir),
        "throttled.bin",
        uid=alice.pw_uid,
        gid=alice.pw_gid,
        expected_sha256=digest,
        max_bytes=None,
    )
    elapsed = time.monotonic() - started
    assert elapsed >= (size - burst) / rate
    assert (working_dir / "throttled.bin").read_bytes() == content
