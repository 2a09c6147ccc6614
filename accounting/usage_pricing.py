"""Price a job's usage: split it by UTC day and rate card, count TRES-seconds, compute amounts.

Each segment lies within one UTC calendar day (so within one month: a job across a period
boundary is split between periods by time) and within one rate card's span (so the price in
force when the usage happened applies). Amounts are exact: the segment's exact rational cost
(summed over TRES, times the QOS multiplier) is rounded once, half to even, to whole micro-units.
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from itertools import pairwise

from accounting.rate_cards import RateCard, card_in_force, prices_for, qos_multiplier
from slurm.usage_records import TresCounts, UsageRecord

MICROS_PER_UNIT = 1_000_000
SECONDS_PER_DAY = 86_400
_SECONDS_PER_HOUR = 3600
_MB_PER_GIB = 1024
# Bump when the canonical encoding below changes, so old and new digests never collide.
_DIGEST_VERSION = "segments-v1"


@dataclass(frozen=True, slots=True)
class PricedSegment:
    """Usage in [usage_start, usage_end), within one UTC day and one rate card's span, and its price."""

    day: datetime.date
    usage_start: int
    usage_end: int
    cpu_seconds: int
    mem_mb_seconds: int
    gpu_seconds: int
    node_seconds: int
    amount_micros: int
    # None: no rate card was in force, so the usage is recorded at amount 0.
    rate_card_id: int | None
    # Decimal text as applied ("1" when the card has none for the QOS, or there is no card).
    qos_multiplier: str

    @property
    def period(self) -> str:
        """The UTC month of the segment, "YYYY-MM"."""
        return f"{self.day.year:04d}-{self.day.month:02d}"


def price_usage(
    *,
    partition: str,
    qos: str | None,
    start: int,
    end: int,
    tres: TresCounts,
    cards: Sequence[RateCard],
) -> list[PricedSegment]:
    """Price ``tres`` held over [start, end) in ``partition`` under ``qos``; [] when end <= start.

    The interval is cut at every UTC midnight and every card's effective_from inside it; each
    piece is priced with the card in force at its start (none: rate_card_id None, amount 0).
    """
    if end <= start:
        return []
    cuts = {effective_from for card in cards if start < (effective_from := card.effective_from) < end}
    cuts.update(range((start // SECONDS_PER_DAY + 1) * SECONDS_PER_DAY, end, SECONDS_PER_DAY))
    bounds = [start, *sorted(cuts), end]
    return [
        _priced_segment(
            partition=partition,
            qos=qos,
            start=piece_start,
            end=piece_end,
            tres=tres,
            card=card_in_force(cards, piece_start),
        )
        for piece_start, piece_end in pairwise(bounds)
    ]


def segments_digest(segments: Sequence[PricedSegment]) -> str:
    """SHA-256 (hex) of a canonical text of ``segments``: equal for equal billing, whatever the order."""
    lines = sorted(
        "|".join(
            str(value)
            for value in (
                segment.day.isoformat(),
                segment.usage_start,
                segment.usage_end,
                segment.cpu_seconds,
                segment.mem_mb_seconds,
                segment.gpu_seconds,
                segment.node_seconds,
                segment.amount_micros,
                "-" if segment.rate_card_id is None else segment.rate_card_id,
                segment.qos_multiplier,
            )
        )
        for segment in segments
    )
    return hashlib.sha256("\n".join([_DIGEST_VERSION, *lines]).encode()).hexdigest()


def billable_interval(record: UsageRecord) -> tuple[int, int] | None:
    """[start, end) a final record held its allocation; None if it never ran or ran no time at all.

    A final record without an end (slurmdbd missed it) ends at start + elapsed. A resized job's
    new record keeps the job's first Start but is submitted at the resize, when its allocation
    began: a record is billed from the later of the two.
    """
    if not record.is_final or record.start_time is None:
        return None
    end = record.end_time if record.end_time is not None else record.start_time + record.elapsed_s
    start = max(record.start_time, record.submit_time)
    if end <= start:
        return None
    return start, end


def _priced_segment(
    *, partition: str, qos: str | None, start: int, end: int, tres: TresCounts, card: RateCard | None
) -> PricedSegment:
    seconds = end - start
    cpu_seconds = tres.cpu * seconds
    mem_mb_seconds = tres.mem_mb * seconds
    gpu_seconds = tres.gpu * seconds
    node_seconds = tres.node * seconds
    if card is None:
        amount_micros, multiplier_text = 0, "1"
    else:
        prices = prices_for(card, partition)
        multiplier = qos_multiplier(card, qos)
        amount_micros = _amount_micros(
            (
                (cpu_seconds, prices.cpu, 1),
                (gpu_seconds, prices.gpu, 1),
                (node_seconds, prices.node, 1),
                (mem_mb_seconds, prices.mem, _MB_PER_GIB),
            ),
            multiplier,
        )
        multiplier_text = _canonical_decimal_text(multiplier)
    return PricedSegment(
        day=datetime.datetime.fromtimestamp(start, datetime.UTC).date(),
        usage_start=start,
        usage_end=end,
        cpu_seconds=cpu_seconds,
        mem_mb_seconds=mem_mb_seconds,
        gpu_seconds=gpu_seconds,
        node_seconds=node_seconds,
        amount_micros=amount_micros,
        rate_card_id=card.id if card is not None else None,
        qos_multiplier=multiplier_text,
    )


def _amount_micros(quantities: Iterable[tuple[int, Decimal, int]], multiplier: Decimal) -> int:
    """Exact sum of quantity x price / per over all terms, x multiplier, in micro-units, rounded half to even.

    Quantities are unit-seconds and prices are per unit-hour (``per``: units per priced unit).
    Integer numerator/denominator arithmetic keeps it exact whatever the magnitudes.
    """
    numerator, denominator = 0, 1
    for quantity, price, per in quantities:
        if quantity and price:
            price_numerator, price_denominator = price.as_integer_ratio()
            price_denominator *= per
            numerator = numerator * price_denominator + quantity * price_numerator * denominator
            denominator *= price_denominator
    multiplier_numerator, multiplier_denominator = multiplier.as_integer_ratio()
    return _round_half_even(
        numerator * multiplier_numerator * MICROS_PER_UNIT,
        denominator * multiplier_denominator * _SECONDS_PER_HOUR,
    )


def _round_half_even(numerator: int, denominator: int) -> int:
    """numerator / denominator (denominator > 0) rounded to an integer, ties to the even one."""
    quotient, remainder = divmod(numerator, denominator)
    twice = 2 * remainder
    if twice > denominator or (twice == denominator and quotient % 2 == 1):
        quotient += 1
    return quotient


def _canonical_decimal_text(value: Decimal) -> str:
    # "1.50" and "1.5" are the same multiplier: one spelling keeps digests stable.
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text
