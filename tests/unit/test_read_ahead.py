"""staging.read_ahead: order, errors where they happen, and a thread that stops with its reader."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from staging.read_ahead import read_ahead


def test_chunks_arrive_complete_and_in_order() -> None:
    chunks = [bytes([index]) * 10 for index in range(50)]
    assert list(read_ahead(iter(chunks), depth=3)) == chunks


def test_the_next_chunk_is_read_while_the_caller_works_on_this_one() -> None:
    read_times: list[float] = []

    def slow_source() -> Iterator[bytes]:
        for _ in range(4):
            time.sleep(0.05)
            read_times.append(time.monotonic())
            yield b"x"

    started = time.monotonic()
    for _ in read_ahead(slow_source()):
        time.sleep(0.05)
    # In turn it would take 8 x 50 ms; overlapped, about 5 x 50 ms.
    assert time.monotonic() - started < 0.35
    assert len(read_times) == 4


def test_an_error_of_the_source_is_raised_after_the_chunks_before_it() -> None:
    def failing() -> Iterator[bytes]:
        yield b"a"
        yield b"b"
        raise OSError("storage went away")

    received = []
    with pytest.raises(OSError, match="storage went away"):
        for chunk in read_ahead(failing()):
            received.append(chunk)
    assert received == [b"a", b"b"]


def test_closing_early_stops_the_reading_thread() -> None:
    produced = 0

    def endless() -> Iterator[bytes]:
        nonlocal produced
        while True:
            produced += 1
            yield b"x"

    before = threading.active_count()
    chunks = read_ahead(endless(), depth=2)
    assert next(chunks) == b"x"
    chunks.close()
    assert threading.active_count() == before
    # At most the chunk handed over, the queue's depth and the one in the thread's hands.
    assert produced <= 4
