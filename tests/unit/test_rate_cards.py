from decimal import Decimal

import pytest

from accounting.rate_cards import (
    MAX_ENTRIES,
    RateCard,
    RateCardError,
    TresPrices,
    card_in_force,
    prices_for,
    qos_multiplier,
    rate_card_document,
    rate_card_from_document,
)

DOCUMENT = {
    "currency": "EUR",
    "prices": {"gpu": {"gpu": "2.50", "cpu": "0.01", "mem": "0.002"}, "*": {"cpu": 1, "node": "0.5"}},
    "qos_multipliers": {"high": "1.5", "low": "0.25"},
}


def card(effective_from: int = 0, *, card_id: int | None = 1) -> RateCard:
    return rate_card_from_document(DOCUMENT, id=card_id, effective_from=effective_from)


def refusal(doc: object, effective_from: int = 0) -> RateCardError:
    with pytest.raises(RateCardError) as caught:
        rate_card_from_document(doc, id=None, effective_from=effective_from)
    return caught.value


def with_price(partition: str, kind: str, value: object) -> dict:
    return {"currency": "EUR", "prices": {partition: {kind: value}}}


def test_document_is_read_exactly() -> None:
    read = card()
    assert read.currency == "EUR"
    assert read.prices["gpu"] == TresPrices(
        gpu=Decimal("2.50"), cpu=Decimal("0.01"), mem=Decimal("0.002"), node=Decimal(0)
    )
    assert read.prices["*"] == TresPrices(cpu=Decimal(1), node=Decimal("0.5"))
    assert read.qos_multipliers == {"high": Decimal("1.5"), "low": Decimal("0.25")}


def test_document_round_trips_with_decimals_as_strings() -> None:
    original = card(1_790_000_000, card_id=7)
    document = rate_card_document(original)
    assert document["prices"]["gpu"] == {"gpu": "2.50", "cpu": "0.01", "mem": "0.002", "node": "0"}
    assert document["qos_multipliers"] == {"high": "1.5", "low": "0.25"}
    assert rate_card_from_document(document, id=7, effective_from=1_790_000_000) == original


def test_zero_with_six_places_is_written_plainly() -> None:
    read = rate_card_from_document(with_price("cpu", "cpu", "0.000000"), id=None, effective_from=0)
    assert rate_card_document(read)["prices"]["cpu"]["cpu"] == "0.000000"


def test_qos_multipliers_are_optional() -> None:
    read = rate_card_from_document({"currency": "USD", "prices": {"*": {}}}, id=None, effective_from=0)
    assert read.qos_multipliers == {}


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        (2.5, 'send decimals as JSON strings (e.g. "2.5")'),
        (True, "must be a decimal"),
        (None, "must be a decimal"),
        ("2,50", "not a plain decimal"),
        ("1e3", "not a plain decimal"),
        ("NaN", "not a plain decimal"),
        (" 2.5", "not a plain decimal"),
        ("-0.01", "negative"),
        (-1, "negative"),
        ("0.0000001", "more than 6 decimal places"),
        ("1000000.01", "above the largest price"),
        (10**200, "far too large"),
    ],
)
def test_bad_price_names_its_field(value: object, needle: str) -> None:
    error = refusal(with_price("gpu", "cpu", value))
    assert error.field == "prices.gpu.cpu"
    assert needle in error.message


def test_largest_and_smallest_prices_are_accepted() -> None:
    read = rate_card_from_document(
        {"currency": "EUR", "prices": {"a": {"gpu": "1000000", "cpu": "0.000001"}}}, id=None, effective_from=0
    )
    assert (read.prices["a"].gpu, read.prices["a"].cpu) == (Decimal(1_000_000), Decimal("0.000001"))


@pytest.mark.parametrize(
    ("doc", "field", "needle"),
    [
        ([], "document", "JSON object"),
        ({"prices": {"*": {}}}, "currency", "is required"),
        ({"currency": "eur", "prices": {"*": {}}}, "currency", "upper-case"),
        ({"currency": "EURO", "prices": {"*": {}}}, "currency", "three-letter"),
        ({"currency": "EUR"}, "prices", "is required"),
        ({"currency": "EUR", "prices": []}, "prices", "partition name"),
        ({"currency": "EUR", "prices": {"gpu": "2.5"}}, "prices.gpu", "TRES (gpu, cpu, mem, node)"),
        ({"currency": "EUR", "prices": {}}, "prices", "at least one partition"),
        ({"currency": "EUR", "prices": {"GPU": {}}}, "prices.GPU", "a-z"),
        ({"currency": "EUR", "prices": {"gpu": {"tpu": "1"}}}, "prices.gpu.tpu", "unknown TRES"),
        ({"currency": "EUR", "prices": {"x" * 65: {}}}, "prices." + "x" * 65, "1-64 characters"),
        ({"currency": "EUR", "prices": {"x" * 1000: {}}}, "prices." + "x" * 64 + "…", "1-64 characters"),
        ({"currency": "EUR", "prices": {"a\nb": {}}}, "prices.a\\nb", "a-z"),
        ({"currency": "EUR", "prices": {"*": {}}, "price": {}}, "price", "unknown field"),
        (
            {"currency": "EUR", "prices": {"*": {}}, "qos_multipliers": {"high": "0"}},
            "qos_multipliers.high",
            "above 0",
        ),
        (
            {"currency": "EUR", "prices": {"*": {}}, "qos_multipliers": {"high": "100.000001"}},
            "qos_multipliers.high",
            "largest multiplier",
        ),
        (
            {"currency": "EUR", "prices": {"*": {}}, "qos_multipliers": {"hi gh": "1"}},
            "qos_multipliers.hi gh",
            "a-z",
        ),
        (
            {"currency": "EUR", "prices": {"*": {}}, "qos_multipliers": ["high"]},
            "qos_multipliers",
            "QOS name",
        ),
    ],
)
def test_bad_document_names_its_field(doc: object, field: str, needle: str) -> None:
    error = refusal(doc)
    assert (error.field, needle in error.message) == (field, True)
    assert str(error).startswith(f"{field}: ")


def test_too_many_partitions_are_refused() -> None:
    prices = {f"p{i}": {} for i in range(MAX_ENTRIES + 1)}
    assert refusal({"currency": "EUR", "prices": prices}).field == "prices"


@pytest.mark.parametrize("effective_from", [-1, 253_402_300_800, True, "0", 1.0])
def test_bad_effective_from_is_refused(effective_from: object) -> None:
    assert refusal(DOCUMENT, effective_from).field == "effective_from"


def test_card_in_force_is_the_latest_not_after_the_instant() -> None:
    cards = [card(200, card_id=2), card(100, card_id=1), card(300, card_id=3)]
    assert card_in_force(cards, 99) is None
    assert [card_in_force(cards, at).id for at in (100, 199, 200, 299, 300, 10**9)] == [1, 1, 2, 2, 3, 3]
    assert card_in_force([], 10**9) is None


def test_prices_fall_back_to_star_then_to_free() -> None:
    read = card()
    assert prices_for(read, "gpu").gpu == Decimal("2.50")
    assert prices_for(read, "cpu") == read.prices["*"]
    without_star = rate_card_from_document(with_price("gpu", "gpu", "1"), id=None, effective_from=0)
    assert prices_for(without_star, "cpu") == TresPrices()


def test_qos_multiplier_defaults_to_star_then_one() -> None:
    read = card()
    assert (qos_multiplier(read, "high"), qos_multiplier(read, "normal"), qos_multiplier(read, None)) == (
        Decimal("1.5"),
        Decimal(1),
        Decimal(1),
    )
    starred = rate_card_from_document(
        {"currency": "EUR", "prices": {"*": {}}, "qos_multipliers": {"*": "2", "low": "0.5"}},
        id=None,
        effective_from=0,
    )
    assert (
        qos_multiplier(starred, "low"),
        qos_multiplier(starred, "normal"),
        qos_multiplier(starred, None),
    ) == (
        Decimal("0.5"),
        Decimal(2),
        Decimal(2),
    )
