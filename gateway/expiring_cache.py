"""A bounded, least-recently-used cache whose entries expire at a time given per entry.

Used on hot read paths (verified tokens, job views) so that memory stays bounded (``max_entries``)
and staleness too (every entry carries its own expiry). Not thread-safe by design: callers use
it from the event loop thread only, where no lock is needed.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

Key = TypeVar("Key")
Value = TypeVar("Value")


class ExpiringLruCache(Generic[Key, Value]):
    """At most ``max_entries`` values, each dropped once its expiry has passed."""

    def __init__(self, max_entries: int) -> None:
        """``max_entries`` must be at least 1; the least recently used entry goes first."""
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._max_entries = max_entries
        self._entries: OrderedDict[Key, tuple[float, Value]] = OrderedDict()

    def __len__(self) -> int:
        """Entries held, expired ones not yet dropped included."""
        return len(self._entries)

    def get(self, key: Key, now: float) -> Value | None:
        """The value stored for ``key`` if it has not expired at ``now``; else None."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires_at, value = entry
        if now >= expires_at:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    def put(self, key: Key, value: Value, expires_at: float) -> None:
        """Store ``value`` until ``expires_at`` (same clock as ``get``'s ``now``), evicting the LRU entry."""
        self._entries[key] = (expires_at, value)
        self._entries.move_to_end(key)
        if len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def discard(self, key: Key) -> None:
        """Forget ``key`` (no error when absent)."""
        self._entries.pop(key, None)
