"""Token buckets on a fake clock: what each take waits, alone and from many threads at once."""

from __future__ import annotations

import threading

import pytest

from staging.transfer_limits import TenantBandwidth, TokenBucket, throttled


class FakeTime:
    """A clock that moves only when told to; sleeps are recorded and (optionally) advance it."""

    def __init__(self, *, sleeping_advances: bool = True) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        self._sleeping_advances = sleeping_advances
        self._lock = threading.Lock()

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            if self._sleeping_advances:
                self.now += seconds


def make_bucket(rate: float, burst: int, fake: FakeTime) -> TokenBucket:
    return TokenBucket(rate, burst, clock=fake.clock, sleep=fake.sleep)


def test_a_full_bucket_lets_the_burst_through_without_waiting() -> None:
    fake = FakeTime()
    bucket = make_bucket(100, 300, fake)
    bucket.take(100)
    bucket.take(200)
    assert fake.sleeps == []


def test_taking_past_the_burst_waits_for_the_missing_tokens() -> None:
    fake = FakeTime()
    bucket = make_bucket(100, 300, fake)
    bucket.take(300)
    bucket.take(50)
    assert fake.sleeps == [pytest.approx(0.5)]


def test_a_take_larger_than_the_burst_waits_in_proportion() -> None:
    fake = FakeTime()
    bucket = make_bucket(1000, 100, fake)
    bucket.take(2100)
    assert fake.sleeps == [pytest.approx(2.0)]
    # The debt was paid by that sleep: the bucket is empty now, not in debt.
    bucket.take(100)
    assert fake.sleeps == [pytest.approx(2.0), pytest.approx(0.1)]


def test_tokens_refill_with_time_but_never_past_the_burst() -> None:
    fake = FakeTime()
    bucket = make_bucket(100, 200, fake)
    bucket.take(200)
    fake.now += 1.0  # 100 tokens back
    bucket.take(100)
    assert fake.sleeps == []
    fake.now += 3600.0  # an idle hour saves up one burst, no more
    bucket.take(200)
    bucket.take(100)
    assert fake.sleeps == [pytest.approx(1.0)]


def test_taking_nothing_never_waits() -> None:
    fake = FakeTime()
    bucket = make_bucket(1, 1, fake)
    bucket.take(1)
    bucket.take(0)
    assert fake.sleeps == []


@pytest.mark.parametrize(("rate", "burst"), [(0, 10), (-1, 10), (10, 0), (10, -5)])
def test_a_bucket_needs_a_positive_rate_and_burst(rate: float, burst: int) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        TokenBucket(rate, burst)


def test_a_negative_take_is_a_bug() -> None:
    with pytest.raises(ValueError, match="negative"):
        TokenBucket(10, 10).take(-1)


def test_concurrent_takes_each_wait_behind_the_debt_of_those_before_them() -> None:
    # The clock stands still, so each taker's wait shows exactly how much debt it queued behind:
    # one taker gets the burst, the others 1, 2, ..., 7 seconds; a lost update would repeat a wait.
    fake = FakeTime(sleeping_advances=False)
    bucket = make_bucket(100, 100, fake)
    start = threading.Barrier(8)

    def taker() -> None:
        start.wait()
        bucket.take(100)

    threads = [threading.Thread(target=taker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(fake.sleeps) == [pytest.approx(float(seconds)) for seconds in range(1, 8)]


def test_unlimited_bandwidth_has_no_bucket() -> None:
    assert TenantBandwidth(None).bucket("tenant-a") is None


def test_each_tenant_has_one_bucket_of_its_own() -> None:
    bandwidth = TenantBandwidth(4096)
    first = bandwidth.bucket("tenant-a")
    assert first is not None
    assert bandwidth.bucket("tenant-a") is first
    other = bandwidth.bucket("tenant-b")
    assert other is not None
    assert other is not first
    assert (first.rate_bytes_s, first.burst_bytes) == (4096.0, 4096)


def test_the_burst_can_be_set_apart_from_the_rate() -> None:
    bucket = TenantBandwidth(4096, burst_bytes=1024).bucket("tenant-a")
    assert bucket is not None
    assert bucket.burst_bytes == 1024


def test_threads_asking_at_once_share_the_tenants_bucket() -> None:
    bandwidth = TenantBandwidth(4096)
    start = threading.Barrier(8)
    seen: list[TokenBucket | None] = []

    def ask() -> None:
        start.wait()
        seen.append(bandwidth.bucket("tenant-a"))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == 8
    assert len({id(bucket) for bucket in seen}) == 1


@pytest.mark.parametrize(("rate", "burst"), [(0, None), (-1, None), (1024, 0)])
def test_bandwidth_must_be_positive(rate: int, burst: int | None) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        TenantBandwidth(rate, burst_bytes=burst)


def test_throttled_passes_chunks_through_and_charges_their_sizes() -> None:
    fake = FakeTime()
    bucket = make_bucket(10, 10, fake)
    chunks = [b"0123456789", b"abcde", b"", b"xyz"]
    assert list(throttled(chunks, bucket)) == chunks
    # 10 from the burst, then 5 and 3 more bytes at 10 bytes/s.
    assert fake.sleeps == [pytest.approx(0.5), pytest.approx(0.3)]


def test_throttled_without_a_bucket_is_the_chunks_themselves() -> None:
    chunks = [b"a" * 1000, b"b"]
    assert list(throttled(iter(chunks), None)) == chunks


def test_throttled_waits_before_releasing_each_chunk() -> None:
    fake = FakeTime()
    bucket = make_bucket(10, 10, fake)
    stream = throttled([b"x" * 10, b"y" * 20], bucket)
    assert next(stream) == b"x" * 10
    assert fake.sleeps == []
    assert next(stream) == b"y" * 20
    assert fake.sleeps == [pytest.approx(2.0)]
