"""Rate cards: prices per TRES-hour per partition, QOS multipliers, effective dates.

A rate card is stored as a JSON document (``rate_card_document``) next to its
``effective_from`` (epoch seconds, UTC); the card in force at an instant is the one with the
greatest ``effective_from`` not after it. Prices are per TRES-hour (memory: per GiB-hour).

Document format::

    {"currency": "EUR",
     "prices": {"gpu": {"gpu": "2.50", "cpu": "0.01", "mem": "0.002", "node": "0"},
                "*": {"cpu": "0.02"}},
     "qos_multipliers": {"high": "1.5", "low": "0.5"}}

Decimals are JSON strings or integers, never JSON floats: a float has already lost its exact
value by the time it reaches us, and money must be exact.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import msgspec

TRES_KINDS = ("gpu", "cpu", "mem", "node")
# The partition (or QOS) entry that applies to every name without its own entry.
ANY_NAME = "*"

MAX_PRICE = Decimal(1_000_000)
MAX_MULTIPLIER = Decimal(100)
MAX_DECIMAL_PLACES = 6
# Far more than any cluster has; bounds the work one document can ask for.
MAX_ENTRIES = 256
# datetime cannot represent instants from year 10000 on.
MAX_EFFECTIVE_FROM = 253_402_300_800

_DOCUMENT_KEYS = ("currency", "prices", "qos_multipliers")
_NAME_LENGTH = 64
_NAME = re.compile(rf"[a-z0-9_.-]{{1,{_NAME_LENGTH}}}", re.ASCII)
_CURRENCY = re.compile(r"[A-Z]{3}", re.ASCII)
_DECIMAL_TEXT = re.compile(r"-?[0-9]+(?:\.[0-9]+)?", re.ASCII)
# Longest valid spelling is "1000000.000000"; longer text can only be refused, so stop early.
_MAX_DECIMAL_TEXT = 32
# Ints beyond this have more digits than _MAX_DECIMAL_TEXT; str() of huge ints is slow or refused.
_MAX_INT_BITS = 100


class TresPrices(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Prices per hour of one unit of each TRES (memory: per GiB-hour), in the card's currency."""

    gpu: Decimal = Decimal(0)
    cpu: Decimal = Decimal(0)
    mem: Decimal = Decimal(0)
    node: Decimal = Decimal(0)


class RateCard(msgspec.Struct, frozen=True, kw_only=True):
    """Prices in force from ``effective_from`` (epoch seconds, UTC) until the next card's."""

    id: int | None
    effective_from: int
    currency: str
    # Partition name → prices; ANY_NAME covers every other partition.
    prices: dict[str, TresPrices]
    # QOS name → multiplier; ANY_NAME covers every other QOS; no entry at all means 1.
    qos_multipliers: dict[str, Decimal]


class RateCardError(Exception):
    """A rate card document is invalid; ``field`` is its path (``prices.gpu.cpu``), ``message`` the fix."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def rate_card_from_document(doc: Mapping[str, Any], *, id: int | None, effective_from: int) -> RateCard:
    """Validate a rate card document and build the RateCard; raise RateCardError naming the bad field."""
    if not isinstance(doc, Mapping):
        raise RateCardError("document", 'a rate card is a JSON object with "currency" and "prices"')
    for key in doc:
        if key not in _DOCUMENT_KEYS:
            raise RateCardError(
                _shown(key), f"unknown field; a rate card has only {', '.join(_DOCUMENT_KEYS)}"
            )
    return RateCard(
        id=id,
        effective_from=_effective_from(effective_from),
        currency=_currency(doc.get("currency")),
        prices=_prices(doc.get("prices")),
        qos_multipliers=_qos_multipliers(doc.get("qos_multipliers", {})),
    )


def rate_card_document(card: RateCard) -> dict[str, Any]:
    """The JSON document for ``card`` (decimals as strings); rate_card_from_document reads it back."""
    return {
        "currency": card.currency,
        "prices": {
            partition: {kind: _decimal_text(getattr(prices, kind)) for kind in TRES_KINDS}
            for partition, prices in sorted(card.prices.items())
        },
        "qos_multipliers": {qos: _decimal_text(m) for qos, m in sorted(card.qos_multipliers.items())},
    }


def card_in_force(cards: Sequence[RateCard], at: int) -> RateCard | None:
    """The card with the greatest ``effective_from`` not after ``at``; None before the first card."""
    in_force = None
    for card in cards:
        if card.effective_from <= at and (in_force is None or card.effective_from > in_force.effective_from):
            in_force = card
    return in_force


def prices_for(card: RateCard, partition: str) -> TresPrices:
    """Prices for ``partition``: its own entry, else the ``*`` entry, else everything free."""
    prices = card.prices.get(partition)
    if prices is None:
        prices = card.prices.get(ANY_NAME)
    return prices if prices is not None else TresPrices()


def qos_multiplier(card: RateCard, qos: str | None) -> Decimal:
    """Multiplier for ``qos``: its own entry, else the ``*`` entry, else 1."""
    multiplier = card.qos_multipliers.get(qos) if qos is not None else None
    if multiplier is None:
        multiplier = card.qos_multipliers.get(ANY_NAME)
    return multiplier if multiplier is not None else Decimal(1)


def _effective_from(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise RateCardError("effective_from", "must be a whole number of epoch seconds (UTC)")
    if not 0 <= value < MAX_EFFECTIVE_FROM:
        raise RateCardError("effective_from", "must be an instant between 1970 and the year 9999")
    return value


def _currency(value: object) -> str:
    if value is None:
        raise RateCardError("currency", 'is required: a three-letter ISO 4217 code such as "EUR"')
    if not isinstance(value, str) or not _CURRENCY.fullmatch(value):
        raise RateCardError("currency", 'must be a three-letter upper-case ISO 4217 code such as "EUR"')
    return value


def _prices(value: object) -> dict[str, TresPrices]:
    if value is None:
        raise RateCardError(
            "prices", 'is required: an object of partition → prices, e.g. {"*": {"cpu": "0.02"}}'
        )
    entries = _entries("prices", value, "an object of partition name → prices per TRES-hour")
    if not entries:
        # An empty card would make all usage free from its effective_from on, silently.
        raise RateCardError("prices", 'price at least one partition, or "*" for every partition')
    prices = {}
    for partition, kinds in entries.items():
        field = f"prices.{partition}"
        per_kind = _entries(field, kinds, f"an object of TRES ({', '.join(TRES_KINDS)}) → price per hour")
        for kind in per_kind:
            if kind not in TRES_KINDS:
                raise RateCardError(
                    f"{field}.{_shown(kind)}", f"unknown TRES; price only {', '.join(TRES_KINDS)}"
                )
        prices[partition] = TresPrices(
            **{kind: _price(f"{field}.{kind}", amount) for kind, amount in per_kind.items()}
        )
    return prices


def _qos_multipliers(value: object) -> dict[str, Decimal]:
    entries = _entries("qos_multipliers", value, "an object of QOS name → multiplier")
    return {qos: _multiplier(f"qos_multipliers.{qos}", m) for qos, m in entries.items()}


def _entries(field: str, value: object, what: str) -> dict[str, Any]:
    """A JSON object whose keys are checked names (or '*'), at most MAX_ENTRIES of them."""
    if not isinstance(value, Mapping):
        raise RateCardError(field, f"must be {what}")
    if len(value) > MAX_ENTRIES:
        raise RateCardError(field, f"has {len(value)} entries; at most {MAX_ENTRIES} are allowed")
    for name in value:
        if not isinstance(name, str) or not (name == ANY_NAME or _NAME.fullmatch(name)):
            raise RateCardError(
                f"{field}.{_shown(name)}",
                'names are 1-64 characters of a-z, 0-9, "_", "." and "-", or "*" for any other name',
            )
    return dict(value)


def _price(field: str, value: object) -> Decimal:
    price = _decimal(field, value)
    if price > MAX_PRICE:
        raise RateCardError(field, f"{_decimal_text(price)} is above the largest price, {MAX_PRICE}")
    return price


def _multiplier(field: str, value: object) -> Decimal:
    multiplier = _decimal(field, value)
    if multiplier == 0:
        raise RateCardError(field, f'must be above 0 and at most {MAX_MULTIPLIER}, e.g. "0.5" for half price')
    if multiplier > MAX_MULTIPLIER:
        raise RateCardError(
            field, f"{_decimal_text(multiplier)} is above the largest multiplier, {MAX_MULTIPLIER}"
        )
    return multiplier


def _decimal(field: str, value: object) -> Decimal:
    """A non-negative exact decimal with at most MAX_DECIMAL_PLACES places, from a string or an int."""
    if isinstance(value, float):
        raise RateCardError(
            field, f'send decimals as JSON strings (e.g. "{value}"): a float cannot hold cents exactly'
        )
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise RateCardError(field, 'must be a decimal written as a string such as "2.50"')
    if isinstance(value, int) and value.bit_length() > _MAX_INT_BITS:
        raise RateCardError(field, "is far too large to be a price or a multiplier")
    text = _decimal_text(value) if isinstance(value, Decimal) and value.is_finite() else str(value)
    if len(text) > _MAX_DECIMAL_TEXT or not _DECIMAL_TEXT.fullmatch(text):
        raise RateCardError(field, f'{text[:_MAX_DECIMAL_TEXT]!r} is not a plain decimal such as "2.50"')
    if text.startswith("-"):
        raise RateCardError(field, f"{text} is negative; prices and multipliers are 0 or more")
    number = Decimal(text)
    if -number.as_tuple().exponent > MAX_DECIMAL_PLACES:
        raise RateCardError(field, f"{text} has more than {MAX_DECIMAL_PLACES} decimal places")
    return number


def _shown(name: object) -> str:
    """A refused name as it may appear in a field path: printable and at most 65 characters."""
    text = str(name)
    shown = text if text.isprintable() else ascii(text)[1:-1]
    return shown if len(shown) <= _NAME_LENGTH + 1 else shown[:_NAME_LENGTH] + "…"


def _decimal_text(value: Decimal) -> str:
    # "f" keeps plain notation: str(Decimal("0.000000")) would be "0E-6".
    return format(value, "f")
