"""Exact money: integer nanodollars inside, decimal strings in USD at the edges.

Redis Lua numbers are doubles, exact only below 2**53; in nanodollars that is about $9.007M per
counter, so every amount a script adds or compares is checked against MAX_NANOS first.
"""

import re
from decimal import ROUND_HALF_UP, Decimal

NANOS_PER_USD = 10**9
MAX_NANOS = 2**53 - 1
_CENT = Decimal("0.01")
_PLAIN = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")


class AmountError(ValueError):
    """An amount that is not a valid decimal USD string for its purpose."""


def parse_usd(text: object, *, max_decimals: int = 9, allow_zero: bool = False) -> Decimal:
    """Parse a decimal USD string strictly: no floats, no exponents games, bounded decimals."""
    if isinstance(text, bool) or not isinstance(text, (str, int)):
        raise AmountError('must be a decimal string in USD, such as "10.00"')
    raw = str(text).strip()
    if not raw or len(raw) > 32:
        raise AmountError('must be a decimal string in USD, such as "10.00"')
    # Decimal() alone would also take "1e3", "NaN", "1_000" and digits of any script.
    if not _PLAIN.fullmatch(raw):
        raise AmountError(f'{raw!r} is not a plain decimal number, such as "10.00"')
    value = Decimal(raw)
    if value < 0 or (value == 0 and not allow_zero):
        raise AmountError("must be positive" if not allow_zero else "must not be negative")
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and -exponent > max_decimals:
        raise AmountError(f"has more than {max_decimals} decimals")
    if usd_to_nanos(value) > MAX_NANOS:
        raise AmountError("is too large")
    return value


def usd_to_nanos(amount: Decimal) -> int:
    """Exact conversion; the caller has bounded the decimals to at most nine."""
    return int(amount * NANOS_PER_USD)


def nanos_to_usd(nanos: int) -> Decimal:
    return Decimal(nanos).scaleb(-9)


def format_usd(nanos: int) -> str:
    """At least two decimals, no trailing zeros past them: 10.00, 0.00000015."""
    whole, frac = divmod(abs(nanos), NANOS_PER_USD)  # integers: on every access log line
    sign = "-" if nanos < 0 else ""
    return f"{sign}{whole}.{f'{frac:09d}'.rstrip('0').ljust(2, '0')}"


def nanos_to_number(nanos: int) -> float:
    """For JSON fields that OpenAI-style clients read as numbers (usage.cost)."""
    return float(nanos_to_usd(nanos))


def fee_nanos(amount: Decimal, percent: Decimal, minimum: Decimal) -> int:
    """Platform fee, rounded half up to the cent: $10 at 5.5% with $0.80 minimum is $0.80."""
    fee = (amount * percent / 100).quantize(_CENT, rounding=ROUND_HALF_UP)
    return usd_to_nanos(max(fee, minimum))
