"""Overlap reading with writing: a thread fetches the next chunks while the caller writes one.

Stage-in reads from object storage and writes to the shared filesystem, stage-out the other way
round; done in turn, each side waits for the other, and a transfer runs at well below either's
speed. With a read-ahead of a couple of chunks both run at once, in bounded memory.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Any

# How long the reading thread waits for room before checking whether the reader went away.
_POLL_S = 0.1


class _End:
    """The source is exhausted."""


class _Failed:
    """The source raised ``error``; the reader raises it in its own thread."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


def read_ahead(chunks: Iterable[bytes], *, depth: int = 2) -> Iterator[bytes]:
    """Yield ``chunks`` in order while a thread reads up to ``depth`` chunks ahead.

    An exception of the source is raised here, at the point it was reached. Closing this
    iterator early (the writer failed) stops the thread after the read it is in.
    """
    ready: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def hand_over(item: object) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=_POLL_S)
            except queue.Full:
                continue
            return True
        return False

    def fetch() -> None:
        try:
            for chunk in chunks:
                if not hand_over(chunk):
                    return
        except BaseException as exc:  # handed to the reader, who decides what it means
            hand_over(_Failed(exc))
            return
        hand_over(_End())

    thread = threading.Thread(target=fetch, name="read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item = ready.get()
            if isinstance(item, _End):
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item
    finally:
        stop.set()
        thread.join()
