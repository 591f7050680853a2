"""The purchase rules the admin API, the webhooks and the account holder's Credits API share:
the fee of a purchase, and why a refund is refused, in words."""

from decimal import Decimal

from config.settings import Settings
from gateway.api.answers.views import duration_text
from gateway.http.errors import ApiError
from metering.money import fee_nanos

REFUSALS = {
    "crypto": "crypto purchases are never refundable",
    "too_old": "purchases are refundable only within {window} of the purchase",
    "nothing_left": "nothing of this purchase is left unused to refund (credits are used oldest "
    "purchase first)",
    "in_flight": "part of what is unused of this purchase is held by requests in flight; try "
    "again when they finish",
    "operator_credited": "this purchase was credited by the operator, not paid through the "
    "payment side: ask the operator to refund it",
}


def purchase_fee(settings: Settings, amount: Decimal, method: str) -> int:
    """The platform fee on top of `amount`, nanodollars (never credited, never refunded)."""
    if method == "crypto":
        return fee_nanos(amount, settings.crypto_fee_percent, settings.crypto_fee_minimum)
    return fee_nanos(amount, settings.card_fee_percent, settings.card_fee_minimum)


def refund_refusal(settings: Settings, reason: str) -> ApiError:
    """The 404 or 409 of a refused refund (RefundRefused's reason)."""
    if reason == "not_found":
        return ApiError(404, "no such purchase", "not_found")
    window = settings.refund_window_hours * 3600
    return ApiError(
        409,
        REFUSALS[reason].format(window=duration_text(window)),
        "refund_refused",
        reason=reason,
        refund_window_hours=settings.refund_window_hours,
    )
