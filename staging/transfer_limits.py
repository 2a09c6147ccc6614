"""Per-tenant bandwidth limits for stage-in and stage-out: a token bucket per tenant.

Every transfer of a tenant draws from that tenant's bucket before each chunk moves, so however
many transfers a tenant runs at once they share one rate, and one tenant cannot starve the others
of the gateway's bandwidth. Tokens are bytes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator


class TokenBucket:
    """``rate_bytes_s`` tokens a second, at most ``burst_bytes`` saved up; thread-safe.

    The bucket starts full. ``take`` reserves its tokens at once, running into debt when there are
    too few, and then sleeps until the debt is paid off: callers are served in the order they
    arrive, and a request larger than the burst is allowed (it waits in proportion to its size).
    """

    def __init__(
        self,
        rate_bytes_s: float,
        burst_bytes: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """A full bucket; ``clock`` and ``sleep`` are replaceable for tests."""
        if rate_bytes_s <= 0:
            raise ValueError(f"rate must be positive, got {rate_bytes_s}")
        if burst_bytes <= 0:
            raise ValueError(f"burst must be positive, got {burst_bytes}")
        self.rate_bytes_s = float(rate_bytes_s)
        self.burst_bytes = burst_bytes
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = float(burst_bytes)
        self._updated = clock()

    def take(self, n: int) -> None:
        """Block until ``n`` tokens are this caller's (``n`` may exceed the burst)."""
        if n < 0:
            raise ValueError(f"cannot take a negative number of tokens ({n})")
        if n == 0:
            return
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst_bytes, self._tokens + (now - self._updated) * self.rate_bytes_s)
            self._updated = now
            self._tokens -= n
            wait_s = -self._tokens / self.rate_bytes_s if self._tokens < 0 else 0.0
        # Sleep outside the lock: the next caller reserves behind this one's debt meanwhile.
        if wait_s > 0:
            self._sleep(wait_s)


class TenantBandwidth:
    """One TokenBucket per tenant at the same rate, created on first use; thread-safe."""

    def __init__(self, rate_bytes_s: int | None, *, burst_bytes: int | None = None) -> None:
        """``rate_bytes_s`` None: unlimited. The burst defaults to one second's worth of bytes."""
        if rate_bytes_s is not None and rate_bytes_s <= 0:
            raise ValueError(f"bandwidth must be positive or None (unlimited), got {rate_bytes_s}")
        if burst_bytes is not None and burst_bytes <= 0:
            raise ValueError(f"burst must be positive, got {burst_bytes}")
        self.rate_bytes_s = rate_bytes_s
        self.burst_bytes = burst_bytes if burst_bytes is not None else rate_bytes_s
        self._lock = threading.Lock()
        self._buckets: dict[str, TokenBucket] = {}

    def bucket(self, tenant_id: str) -> TokenBucket | None:
        """The tenant's bucket (the same object on every call), or None when unlimited."""
        if self.rate_bytes_s is None or self.burst_bytes is None:
            return None
        with self._lock:
            bucket = self._buckets.get(tenant_id)
            if bucket is None:
                bucket = TokenBucket(self.rate_bytes_s, self.burst_bytes)
                self._buckets[tenant_id] = bucket
            return bucket


def throttled(chunks: Iterable[bytes], bucket: TokenBucket | None) -> Iterator[bytes]:
    """``chunks`` unchanged, each one released only once ``bucket`` granted its size."""
    for chunk in chunks:
        if bucket is not None:
            bucket.take(len(chunk))
        yield chunk
