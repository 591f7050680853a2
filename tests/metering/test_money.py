from decimal import Decimal

import pytest

from metering.money import (
    MAX_NANOS,
    AmountError,
    fee_nanos,
    format_usd,
    parse_usd,
    usd_to_nanos,
)


def test_card_fee_minimum_applies_to_small_purchases() -> None:
    # $10 by card: 5.5% is $0.55, below the $0.80 minimum: the buyer pays $10.80.
    assert fee_nanos(Decimal("10.00"), Decimal("5.5"), Decimal("0.80")) == 800_000_000


def test_card_fee_percent_on_large_purchases() -> None:
    assert fee_nanos(Decimal("100.00"), Decimal("5.5"), Decimal("0.80")) == 5_500_000_000


def test_fee_rounds_half_up_to_the_cent() -> None:
    # 5% of $0.30 is $0.015 -> $0.02; 5% of $0.29 is $0.0145 -> $0.01.
    assert fee_nanos(Decimal("0.30"), Decimal("5"), Decimal("0")) == 20_000_000
    assert fee_nanos(Decimal("0.29"), Decimal("5"), Decimal("0")) == 10_000_000


@pytest.mark.parametrize(
    ("nanos", "text"),
    [
        (10_000_000_000, "10.00"),
        (150, "0.00000015"),
        (0, "0.00"),
        (-2_550, "-0.00000255"),
        (1_234_500_000, "1.2345"),
    ],
)
def test_format_usd(nanos: int, text: str) -> None:
    assert format_usd(nanos) == text


@pytest.mark.parametrize(
    "bad", ["", "abc", "1e3", "NaN", "Infinity", "-1", "0", 1.5, True, None, "0.001", "99999999999"]
)
def test_parse_usd_refuses(bad: object) -> None:
    with pytest.raises(AmountError):
        parse_usd(bad, max_decimals=2)


def test_parse_usd_exact() -> None:
    assert usd_to_nanos(parse_usd("0.000000001")) == 1
    assert usd_to_nanos(parse_usd("9007199.254740991")) == MAX_NANOS
    with pytest.raises(AmountError):
        parse_usd("9007199.254740992")
