import calendar
import datetime
import random
from decimal import Decimal
from fractions import Fraction
from itertools import pairwise

import pytest

from accounting.rate_cards import RateCard, rate_card_from_document
from accounting.usage_pricing import PricedSegment, billable_interval, price_usage, segments_digest
from slurm.usage_records import TresCounts, UsageRecord

HOUR = 3600
DAY = 86_400
ONE_GPU = TresCounts(cpu=2, mem_mb=1024, gpu=1, node=1)


def at(text: str) -> int:
    """Epoch seconds of a UTC "YYYY-MM-DDTHH:MM" instant."""
    return calendar.timegm(datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M").timetuple())


def rate_card(
    card_id: int, effective_from: int, prices: dict, qos_multipliers: dict | None = None
) -> RateCard:
    document = {"currency": "EUR", "prices": prices, "qos_multipliers": qos_multipliers or {}}
    return rate_card_from_document(document, id=card_id, effective_from=effective_from)


GPU_PRICES = {"gpu": "2.50", "cpu": "0.10", "mem": "0.01", "node": "1"}
GPU_CARD = rate_card(1, 0, {"gpu": GPU_PRICES})


def price(
    start: int,
    end: int,
    *,
    tres: TresCounts = ONE_GPU,
    cards: list[RateCard] | None = None,
    partition: str = "gpu",
    qos: str | None = "normal",
) -> list[PricedSegment]:
    return price_usage(
        partition=partition,
        qos=qos,
        start=start,
        end=end,
        tres=tres,
        cards=[GPU_CARD] if cards is None else cards,
    )


def test_one_hour_on_one_card() -> None:
    start = at("2026-11-03T10:00")
    (segment,) = price(start, start + HOUR)
    assert segment == PricedSegment(
        day=datetime.date(2026, 11, 3),
        usage_start=start,
        usage_end=start + HOUR,
        cpu_seconds=2 * HOUR,
        mem_mb_seconds=1024 * HOUR,
        gpu_seconds=HOUR,
        node_seconds=HOUR,
        # 2.50 gpu + 2 * 0.10 cpu + 1 GiB * 0.01 + 1 node * 1 = 3.71
        amount_micros=3_710_000,
        rate_card_id=1,
        qos_multiplier="1",
    )
    assert segment.period == "2026-11"


def test_job_across_a_month_boundary_is_split_between_periods() -> None:
    segments = price(at("2026-10-31T23:00"), at("2026-11-01T01:00"))
    assert [(s.period, s.day, s.usage_end - s.usage_start, s.gpu_seconds) for s in segments] == [
        ("2026-10", datetime.date(2026, 10, 31), HOUR, HOUR),
        ("2026-11", datetime.date(2026, 11, 1), HOUR, HOUR),
    ]
    assert segments[0].usage_end == segments[1].usage_start == at("2026-11-01T00:00")
    assert [s.amount_micros for s in segments] == [3_710_000, 3_710_000]


def test_multi_day_job_has_one_segment_per_utc_day() -> None:
    segments = price(at("2026-11-01T12:00"), at("2026-11-04T06:00"))
    assert [(s.day.day, s.usage_end - s.usage_start) for s in segments] == [
        (1, 12 * HOUR),
        (2, DAY),
        (3, DAY),
        (4, 6 * HOUR),
    ]


def test_job_ending_exactly_at_midnight_stays_in_its_day() -> None:
    (segment,) = price(at("2026-11-30T23:00"), at("2026-12-01T00:00"))
    assert (segment.period, segment.usage_end - segment.usage_start) == ("2026-11", HOUR)


def test_rate_change_mid_job_prices_each_part_at_its_card() -> None:
    change = at("2026-11-03T10:30")
    cards = [
        rate_card(1, 0, {"gpu": {"gpu": "1"}}),
        rate_card(2, change, {"gpu": {"gpu": "2"}}),
    ]
    segments = price(at("2026-11-03T10:00"), at("2026-11-03T12:00"), cards=cards)
    assert [(s.usage_start, s.usage_end, s.rate_card_id, s.amount_micros) for s in segments] == [
        (at("2026-11-03T10:00"), change, 1, 500_000),
        (change, at("2026-11-03T12:00"), 2, 3_000_000),
    ]


def test_card_effective_at_the_start_or_at_midnight_adds_no_extra_cut() -> None:
    start, midnight = at("2026-11-03T22:00"), at("2026-11-04T00:00")
    cards = [rate_card(1, 0, {"gpu": {"gpu": "1"}}), rate_card(2, start, {"gpu": {"gpu": "2"}})]
    cards.append(rate_card(3, midnight, {"gpu": {"gpu": "3"}}))
    segments = price(start, midnight + HOUR, cards=cards)
    assert [(s.rate_card_id, s.amount_micros) for s in segments] == [(2, 4_000_000), (3, 3_000_000)]


def test_usage_before_any_card_is_recorded_at_zero() -> None:
    first_card_from = at("2026-11-03T11:00")
    cards = [rate_card(5, first_card_from, {"gpu": {"gpu": "1"}})]
    segments = price(at("2026-11-03T10:00"), at("2026-11-03T12:00"), cards=cards)
    assert [(s.rate_card_id, s.qos_multiplier, s.amount_micros, s.gpu_seconds) for s in segments] == [
        (None, "1", 0, HOUR),
        (5, "1", 1_000_000, HOUR),
    ]
    (unpriced,) = price(at("2026-11-03T10:00"), at("2026-11-03T11:00"), cards=[])
    assert (unpriced.rate_card_id, unpriced.amount_micros, unpriced.cpu_seconds) == (None, 0, 2 * HOUR)


def test_qos_multiplier_scales_the_amount_and_is_recorded_canonically() -> None:
    cards = [rate_card(1, 0, {"gpu": {"gpu": "2"}}, {"high": "1.50", "low": "0.25"})]
    start = at("2026-11-03T10:00")
    high, low, normal = (price(start, start + HOUR, cards=cards, qos=q)[0] for q in ("high", "low", "normal"))
    assert [(s.amount_micros, s.qos_multiplier) for s in (high, low, normal)] == [
        (3_000_000, "1.5"),
        (500_000, "0.25"),
        (2_000_000, "1"),
    ]


def test_multiplier_of_one_hundred_keeps_its_zeros() -> None:
    cards = [rate_card(1, 0, {"gpu": {"gpu": "1"}}, {"burst": "100"})]
    (segment,) = price(0, HOUR, cards=cards, qos="burst")
    assert (segment.qos_multiplier, segment.amount_micros) == ("100", 100_000_000)


def test_star_partition_prices_other_partitions() -> None:
    cards = [rate_card(1, 0, {"gpu": {"cpu": "1"}, "*": {"cpu": "0.5"}})]
    cpu_only = TresCounts(cpu=4, node=1)
    (on_cpu,) = price(0, HOUR, tres=cpu_only, cards=cards, partition="cpu")
    (on_gpu,) = price(0, HOUR, tres=cpu_only, cards=cards, partition="gpu")
    assert (on_cpu.amount_micros, on_gpu.amount_micros) == (2_000_000, 4_000_000)
    (unpriced,) = price(
        0, HOUR, tres=cpu_only, cards=[rate_card(1, 0, {"gpu": {"cpu": "1"}})], partition="cpu"
    )
    assert (unpriced.amount_micros, unpriced.rate_card_id) == (0, 1)


def test_memory_is_priced_per_gib_hour() -> None:
    cards = [rate_card(1, 0, {"*": {"mem": "0.5"}})]
    (two_gib,) = price(0, HOUR, tres=TresCounts(mem_mb=2048), cards=cards)
    assert (two_gib.mem_mb_seconds, two_gib.amount_micros) == (2048 * HOUR, 1_000_000)
    (half_hour,) = price(0, HOUR // 2, tres=TresCounts(mem_mb=512), cards=cards)
    assert half_hour.amount_micros == 125_000


@pytest.mark.parametrize(
    ("mem_mb", "micros"),
    [
        (1000, 976_562),  # 1000/1024 = 0.9765625 → 976562.5 micros, ties to even (down)
        (3000, 2_929_688),  # 2.9296875 → 2929687.5 micros, ties to even (up)
        (1001, 977_539),  # 977539.0625 → down
    ],
)
def test_amount_rounds_half_to_even_at_micros(mem_mb: int, micros: int) -> None:
    cards = [rate_card(1, 0, {"*": {"mem": "1"}})]
    (segment,) = price(0, HOUR, tres=TresCounts(mem_mb=mem_mb), cards=cards)
    assert segment.amount_micros == micros


@pytest.mark.parametrize(("seconds", "micros"), [(1, 0), (3, 2), (5, 2), (7, 4), (4, 2)])
def test_tiny_amounts_round_half_to_even(seconds: int, micros: int) -> None:
    # 0.0018 per cpu-hour is 0.5 micro-units per cpu-second.
    cards = [rate_card(1, 0, {"*": {"cpu": "0.0018"}})]
    (segment,) = price(0, seconds, tres=TresCounts(cpu=1), cards=cards)
    assert segment.amount_micros == micros


def test_terms_are_summed_exactly_before_the_one_rounding() -> None:
    # Each term alone is a repeating decimal (1/3 and 1/6 micro-units); their sum is exactly 0.5.
    cards = [rate_card(1, 0, {"*": {"cpu": "0.0012", "gpu": "0.0006"}})]
    (one_second,) = price(0, 1, tres=TresCounts(cpu=1, gpu=1), cards=cards)
    assert one_second.amount_micros == 0
    (three_seconds,) = price(0, 3, tres=TresCounts(cpu=1, gpu=1), cards=cards)
    assert three_seconds.amount_micros == 2


def test_empty_or_reversed_interval_has_no_segments() -> None:
    assert price(100, 100) == []
    assert price(200, 100) == []


def test_segment_seconds_add_up_for_random_intervals() -> None:
    rng = random.Random(20261101)
    base = at("2026-10-01T00:00")
    for _ in range(300):
        start = base + rng.randrange(0, 90 * DAY)
        end = start + rng.randrange(1, 40 * DAY)
        tres = TresCounts(
            cpu=rng.randrange(0, 64), mem_mb=rng.randrange(0, 10**6), gpu=rng.randrange(0, 8), node=1
        )
        cards = [
            rate_card(i, base + rng.randrange(-DAY, 120 * DAY), {"*": {"cpu": "0.01", "gpu": str(i)}})
            for i in range(rng.randrange(0, 4))
        ]
        segments = price(start, end, tres=tres, cards=cards)
        seconds = end - start
        assert sum(s.cpu_seconds for s in segments) == tres.cpu * seconds
        assert sum(s.mem_mb_seconds for s in segments) == tres.mem_mb * seconds
        assert sum(s.gpu_seconds for s in segments) == tres.gpu * seconds
        assert sum(s.node_seconds for s in segments) == seconds
        # Contiguous, inside one UTC day each, and cut at every card change inside the job.
        assert segments[0].usage_start == start
        assert segments[-1].usage_end == end
        assert all(a.usage_end == b.usage_start for a, b in pairwise(segments))
        assert all((s.usage_end - 1) // DAY == s.usage_start // DAY for s in segments)
        for card in cards:
            assert not any(s.usage_start < card.effective_from < s.usage_end for s in segments)


def test_digest_is_stable_and_ignores_order() -> None:
    first = price(at("2026-10-31T23:00"), at("2026-11-01T01:00"))
    again = price(at("2026-10-31T23:00"), at("2026-11-01T01:00"))
    assert segments_digest(first) == segments_digest(again)
    assert segments_digest(first) == segments_digest(list(reversed(first)))
    assert len(segments_digest(first)) == 64
    assert segments_digest([]) != segments_digest(first)


def test_digest_ignores_how_the_multiplier_was_spelled() -> None:
    one = [rate_card(1, 0, {"gpu": {"gpu": "2"}}, {"high": "1.5"})]
    other = [rate_card(1, 0, {"gpu": {"gpu": "2"}}, {"high": "1.500"})]
    assert segments_digest(price(0, HOUR, cards=one, qos="high")) == segments_digest(
        price(0, HOUR, cards=other, qos="high")
    )


@pytest.mark.parametrize(
    "changed",
    [
        {"end": at("2026-11-01T01:00") + 1},
        {"start": at("2026-10-31T23:00") - 1},
        {"tres": TresCounts(cpu=2, mem_mb=1024, gpu=2, node=1)},
        {"tres": TresCounts(cpu=2, mem_mb=1025, gpu=1, node=1)},
        {"cards": [rate_card(1, 0, {"gpu": {"gpu": "2.51"}})]},
        {"cards": [rate_card(2, 0, {"gpu": GPU_PRICES})]},
        {"cards": []},
        {"cards": [rate_card(1, 0, {"gpu": GPU_PRICES}, {"normal": "2"})]},
        {"partition": "cpu"},
    ],
)
def test_digest_changes_when_anything_billable_changes(changed: dict) -> None:
    arguments = {"start": at("2026-10-31T23:00"), "end": at("2026-11-01T01:00")} | changed
    baseline = price(at("2026-10-31T23:00"), at("2026-11-01T01:00"))
    start, end = arguments.pop("start"), arguments.pop("end")
    assert segments_digest(price(start, end, **arguments)) != segments_digest(baseline)


def test_digest_unchanged_when_only_unbilled_details_change() -> None:
    baseline = price(at("2026-10-31T23:00"), at("2026-11-01T01:00"))
    # A card that starts after the job, a new price on another partition and another QOS's multiplier.
    later = rate_card(2, at("2026-12-01T00:00"), {"gpu": {"gpu": "9"}})
    same_prices = rate_card(1, 0, {"gpu": GPU_PRICES, "cpu": {"cpu": "3"}}, {"high": "2"})
    assert segments_digest(
        price(at("2026-10-31T23:00"), at("2026-11-01T01:00"), cards=[same_prices, later])
    ) == segments_digest(baseline)


def usage_record(**changes: object) -> UsageRecord:
    fields = {
        "cluster": "dev",
        "job_id_raw": "42",
        "job_id": "42",
        "state": "COMPLETED",
        "account": "acme",
        "user": "alice",
        "partition": "gpu",
        "qos": "normal",
        "submit_time": 1_000,
        "start_time": 1_100,
        "end_time": 1_700,
        "elapsed_s": 600,
        "time_limit_s": 3_600,
        "node_count": 1,
        "alloc": ONE_GPU,
        "requested": ONE_GPU,
        "tasks": 1,
    }
    return UsageRecord(**(fields | changes))


@pytest.mark.parametrize(
    ("changes", "interval"),
    [
        ({}, (1_100, 1_700)),
        ({"state": "REQUEUED"}, (1_100, 1_700)),
        # A resize: the allocation before it is final; the new record starts at the resize.
        ({"state": "RESIZING"}, (1_100, 1_700)),
        ({"submit_time": 1_400}, (1_400, 1_700)),
        ({"submit_time": 1_700}, None),
        ({"state": "CANCELLED", "end_time": None}, (1_100, 1_700)),
        ({"state": "RUNNING", "end_time": None}, None),
        ({"state": "PENDING", "start_time": None, "end_time": None, "elapsed_s": 0}, None),
        ({"state": "CANCELLED", "start_time": None, "elapsed_s": 0}, None),
        ({"end_time": 1_100, "elapsed_s": 0}, None),
        ({"end_time": 1_000}, None),
        ({"end_time": None, "elapsed_s": 0}, None),
    ],
)
def test_billable_interval(changes: dict, interval: tuple[int, int] | None) -> None:
    assert billable_interval(usage_record(**changes)) == interval


def test_large_job_amount_is_exact() -> None:
    # 366 days of 4 GPUs at the highest price: far beyond float precision, still exact.
    cards = [rate_card(1, 0, {"*": {"gpu": "999999.999999"}})]
    segments = price(0, 366 * DAY, tres=TresCounts(gpu=4), cards=cards)
    total = sum(s.amount_micros for s in segments)
    assert total == int(Decimal("999999.999999") * 4 * 24 * 366 * 1_000_000)


def test_amounts_equal_the_exact_rational_cost_rounded_half_to_even() -> None:
    rng = random.Random(7)

    def decimal(places: int) -> str:
        return format(Decimal(rng.randrange(0, 10 ** (6 + places))).scaleb(-places), "f")

    for _ in range(500):
        prices = {kind: decimal(rng.randrange(0, 7)) for kind in ("gpu", "cpu", "mem", "node")}
        multiplier = format(Decimal(rng.randrange(1, 10**8)).scaleb(-6), "f")
        cards = [rate_card(1, 0, {"*": prices}, {"q": multiplier})]
        tres = TresCounts(
            cpu=rng.randrange(0, 256), mem_mb=rng.randrange(0, 2 * 10**6), gpu=rng.randrange(0, 8), node=1
        )
        seconds = rng.randrange(1, DAY)
        (segment,) = price(0, seconds, tres=tres, cards=cards, qos="q")
        exact = (
            (
                sum(Fraction(prices[kind]) * getattr(tres, kind) for kind in ("gpu", "cpu", "node"))
                + Fraction(prices["mem"]) * Fraction(tres.mem_mb, 1024)
            )
            * seconds
            * Fraction(multiplier)
            * 1_000_000
            / 3600
        )
        # round() of a Fraction rounds ties to even.
        assert segment.amount_micros == round(exact)
