"""ExpiringLruCache: entries expire at their own time, the least recently used goes first."""

from __future__ import annotations

import pytest

from gateway.expiring_cache import ExpiringLruCache


def test_value_is_served_until_its_expiry() -> None:
    cache: ExpiringLruCache[str, int] = ExpiringLruCache(4)
    cache.put("a", 1, expires_at=10.0)
    assert cache.get("a", now=9.999) == 1
    assert cache.get("a", now=10.0) is None
    # An expired entry is dropped, not just hidden.
    assert len(cache) == 0


def test_least_recently_used_entry_is_evicted_first() -> None:
    cache: ExpiringLruCache[str, int] = ExpiringLruCache(2)
    cache.put("a", 1, expires_at=100.0)
    cache.put("b", 2, expires_at=100.0)
    assert cache.get("a", now=0.0) == 1  # "b" is now the least recently used
    cache.put("c", 3, expires_at=100.0)
    assert (cache.get("a", now=0.0), cache.get("b", now=0.0), cache.get("c", now=0.0)) == (1, None, 3)
    assert len(cache) == 2


def test_put_replaces_value_and_expiry() -> None:
    cache: ExpiringLruCache[str, int] = ExpiringLruCache(2)
    cache.put("a", 1, expires_at=5.0)
    cache.put("a", 2, expires_at=50.0)
    assert cache.get("a", now=20.0) == 2
    assert len(cache) == 1


def test_discard_forgets_and_tolerates_absent_keys() -> None:
    cache: ExpiringLruCache[str, int] = ExpiringLruCache(2)
    cache.put("a", 1, expires_at=5.0)
    cache.discard("a")
    cache.discard("never-there")
    assert cache.get("a", now=0.0) is None


def test_needs_room_for_one_entry() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ExpiringLruCache(0)
