"""Log ranges, tails, UTF-8 chunking and the fan-out hub, on real files in a temporary directory."""

from __future__ import annotations

import asyncio
import base64
import os
from pathlib import Path

import pytest

from gateway import job_logs, log_streams
from gateway.domain_errors import InvalidField
from gateway.job_logs import (
    MAX_CHUNK,
    LogFileRefused,
    LogTarget,
    chunk_payload,
    read_range,
    read_tail,
    split_chunks,
    utf8_cut,
)
from gateway.log_streams import Ended, KeepAlive, LogHub, LogText, StreamItem, Truncated
from gateway.query_params import parse_int


def target_in(directory: Path, name: str | None = "slurm-7.out", state: str = "running") -> LogTarget:
    return LogTarget(
        working_dir=str(directory), file_name=name, row_id="j", attempt=1, state=state, exit_code=None
    )


def test_range_reads_from_offset_and_reports_size(tmp_path: Path) -> None:
    (tmp_path / "slurm-7.out").write_bytes(b"0123456789")
    found = read_range(target_in(tmp_path), 3, 4)
    assert (found.data, found.offset, found.next_offset, found.size) == (b"3456", 3, 7, 10)
    assert read_range(target_in(tmp_path), 10, 4).data == b""


def test_offset_past_the_end_is_refused_naming_offset(tmp_path: Path) -> None:
    (tmp_path / "slurm-7.out").write_bytes(b"abc")
    with pytest.raises(InvalidField) as refused:
        read_range(target_in(tmp_path), 4, 10)
    assert refused.value.field == "offset"


def test_missing_file_is_pending_and_empty(tmp_path: Path) -> None:
    found = read_range(target_in(tmp_path), 0, 10)
    assert (found.data, found.size, found.exists) == (b"", 0, False)
    assert not read_range(target_in(tmp_path, name=None), 0, 10).exists


def test_symlinked_log_is_refused_not_followed(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(b"root only")
    (tmp_path / "slurm-7.out").symlink_to(secret)
    with pytest.raises(LogFileRefused, match="symlink"):
        read_range(target_in(tmp_path), 0, 10)


@pytest.mark.parametrize(
    ("body", "lines", "expected"),
    [
        (b"a\nb\nc\n", 2, b"b\nc\n"),
        (b"a\nb\nc", 2, b"b\nc"),
        (b"a\nb\n", 5, b"a\nb\n"),
        (b"", 3, b""),
        (b"\n\n\n", 1, b"\n"),
    ],
)
def test_tail_returns_the_last_lines(tmp_path: Path, body: bytes, lines: int, expected: bytes) -> None:
    (tmp_path / "slurm-7.out").write_bytes(body)
    found = read_tail(target_in(tmp_path), lines)
    assert found.data == expected
    assert found.next_offset == found.size == len(body)


def test_tail_reads_backwards_in_blocks_and_stops_at_the_cap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(job_logs, "TAIL_BLOCK", 7)
    monkeypatch.setattr(job_logs, "MAX_TAIL_BYTES", 50)
    body = b"".join(f"line {n}\n".encode() for n in range(100))
    (tmp_path / "slurm-7.out").write_bytes(body)
    assert read_tail(target_in(tmp_path), 3).data == b"line 97\nline 98\nline 99\n"
    # One enormous line: only the last MAX_TAIL_BYTES come back.
    (tmp_path / "slurm-7.out").write_bytes(b"x" * 1000)
    found = read_tail(target_in(tmp_path), 1)
    assert (len(found.data), found.offset) == (50, 950)


def test_parse_int_names_the_parameter() -> None:
    assert parse_int("limit", None, default=5, low=1, high=9) == 5
    for text in ("-1", "abc", "10", "99999999999999999999999"):
        with pytest.raises(InvalidField) as refused:
            parse_int("limit", text, default=5, low=1, high=9)
        assert refused.value.field == "limit"


def test_utf8_cut_holds_back_an_incomplete_sequence() -> None:
    euro = "€".encode()
    assert utf8_cut(b"ab" + euro[:2], final=False) == 2
    assert utf8_cut(b"ab" + euro[:2], final=True) == 4
    assert utf8_cut(b"ab" + euro, final=False) == 5
    assert utf8_cut(b"\xff\xfe", final=False) == 2


def test_chunks_are_bounded_and_never_split_a_character() -> None:
    text = ("é" * MAX_CHUNK).encode()
    chunks, used = split_chunks(text + "€".encode()[:1], final=False)
    assert used == len(text)
    assert all(len(chunk) <= MAX_CHUNK for chunk in chunks)
    assert "".join(chunk.decode() for chunk in chunks) == "é" * MAX_CHUNK


def test_binary_chunks_travel_as_base64() -> None:
    data = bytes(range(256))
    payload = chunk_payload(5, data)
    assert payload["offset"] == 5
    assert base64.b64decode(str(payload["base64"])) == data
    assert chunk_payload(0, "héllo".encode()) == {"offset": 0, "text": "héllo"}


async def collect(
    hub: LogHub, target: LogTarget, offset: int, state: list[str], until_end: bool = True
) -> list[StreamItem]:
    items: list[StreamItem] = []
    async for item in hub.follow(target, offset, lambda: (state[0], 0), keepalive_s=0.5):
        items.append(item)
        if isinstance(item, Ended):
            break
    return items


def joined(items: list[StreamItem]) -> bytes:
    """The bytes a client ends up with (restarting at a truncation)."""
    content = b""
    for item in items:
        if isinstance(item, Truncated):
            content = b""
        elif isinstance(item, LogText):
            assert item.offset == len(content)
            content += item.data
    return content


@pytest.fixture
def fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(log_streams, "POLL_S", 0.01)
    monkeypatch.setattr(log_streams, "STATE_CHECK_S", 0.05)


@pytest.mark.usefixtures("fast_polls")
def test_twenty_subscribers_cost_the_reads_of_one(tmp_path: Path) -> None:
    log = tmp_path / "slurm-7.out"
    log.write_bytes(b"")

    async def scenario(subscribers: int) -> tuple[list[list[StreamItem]], int]:
        hub = LogHub()
        state = ["running"]
        readers = [
            asyncio.create_task(collect(hub, target_in(tmp_path), 0, state)) for _ in range(subscribers)
        ]
        await asyncio.sleep(0.05)
        expected = b""
        for n in range(20):
            line = f"line {n} é\n".encode()
            with log.open("ab") as out:
                out.write(line)
            expected += line
            await asyncio.sleep(0.03)
        state[0] = "completed"
        results = await asyncio.wait_for(asyncio.gather(*readers), 5)
        for items in results:
            assert joined(items) == expected
            assert items[-1] == Ended(0, "completed", 0, len(expected))
        assert not hub.feeds
        return list(results), hub.reads

    log.write_bytes(b"")
    _, one = asyncio.run(scenario(1))
    log.write_bytes(b"")
    _, twenty = asyncio.run(scenario(20))
    assert one >= 10
    # Timing may merge or split a write between polls: the count of feed reads stays that of one.
    assert abs(twenty - one) <= 2


@pytest.mark.usefixtures("fast_polls")
def test_late_subscriber_resumes_behind_the_feed_without_gap_or_overlap(tmp_path: Path) -> None:
    log = tmp_path / "slurm-7.out"
    log.write_bytes(b"")
    body = b"".join(f"{n:04d}\n".encode() for n in range(400))

    async def scenario() -> None:
        hub = LogHub()
        state = ["running"]
        first = asyncio.create_task(collect(hub, target_in(tmp_path), 0, state))
        for start in range(0, len(body), 200):
            with log.open("ab") as out:
                out.write(body[start : start + 200])
            await asyncio.sleep(0.02)
        # Resumes at 1000 while the feed is at the end: reads 1000.. itself, then joins.
        late = asyncio.create_task(collect(hub, target_in(tmp_path), 1000, state))
        await asyncio.sleep(0.05)
        state[0] = "completed"
        first_items, late_items = await asyncio.wait_for(asyncio.gather(first, late), 5)
        assert joined(first_items) == body
        late_bytes = b"".join(item.data for item in late_items if isinstance(item, LogText))
        assert late_bytes == body[1000:]
        assert hub.backlog_reads >= 1

    asyncio.run(scenario())


@pytest.mark.usefixtures("fast_polls")
def test_truncated_file_starts_over_from_zero(tmp_path: Path) -> None:
    log = tmp_path / "slurm-7.out"
    log.write_bytes(b"old old old\n")

    async def scenario() -> list[StreamItem]:
        hub = LogHub()
        state = ["running"]
        reader = asyncio.create_task(collect(hub, target_in(tmp_path), 0, state))
        await asyncio.sleep(0.1)
        log.write_bytes(b"new\n")
        await asyncio.sleep(0.1)
        state[0] = "failed"
        return await asyncio.wait_for(reader, 5)

    items = asyncio.run(scenario())
    assert any(isinstance(item, Truncated) for item in items)
    assert joined(items) == b"new\n"
    assert isinstance(items[-1], Ended)
    assert items[-1].state == "failed"


@pytest.mark.usefixtures("fast_polls")
def test_slow_subscriber_catches_up_on_its_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(log_streams, "QUEUE_CHUNKS", 2)
    monkeypatch.setattr(job_logs, "MAX_CHUNK", 16)
    monkeypatch.setattr(log_streams, "MAX_CHUNK", 16)
    log = tmp_path / "slurm-7.out"
    body = os.urandom(4000)
    log.write_bytes(body)

    async def scenario() -> list[StreamItem]:
        hub = LogHub()
        items: list[StreamItem] = []
        async for item in hub.follow(target_in(tmp_path, state="completed"), 0, lambda: ("completed", 0)):
            items.append(item)
            await asyncio.sleep(0.001)
        return items

    items = asyncio.run(asyncio.wait_for(scenario(), 10))
    assert joined(items) == body
    assert not any(isinstance(item, KeepAlive) for item in items)


@pytest.mark.usefixtures("fast_polls")
def test_a_log_swapped_for_a_symlink_ends_the_stream_saying_why(tmp_path: Path) -> None:
    log = tmp_path / "slurm-7.out"
    log.write_bytes(b"first\n")
    secret = tmp_path / "secret"
    secret.write_bytes(b"not yours\n")

    async def scenario() -> list[StreamItem]:
        hub = LogHub()
        reader = asyncio.create_task(collect(hub, target_in(tmp_path), 0, ["running"]))
        await asyncio.sleep(0.1)
        log.unlink()
        log.symlink_to(secret)
        return await asyncio.wait_for(reader, 5)

    items = asyncio.run(scenario())
    assert joined(items) == b"first\n"
    assert isinstance(items[-1], Ended)
    assert items[-1].error is not None and "symlink" in items[-1].error
