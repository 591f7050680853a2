"""The answers of the account holder's Credits API (gateway.billing.credits_api), typed as the
other APIs' answers are (gateway.api.answers.shapes), and listed in the OpenAPI document from
here."""

from typing import Literal

from pydantic import Field

from gateway.api.answers.shapes import AutoTopup, FreeModelDailyRequests
from gateway.api.answers.shapes_base import Shape, Time, Usd

RowStatus = Literal["pending", "completed", "failed", "refunded", "partially_refunded"]
NotRefundable = Literal[
    "not_paid", "operator_credited", "crypto", "window_passed", "used_up", "refunded"
]


class PurchaseRules(Shape):
    """What a purchase may be, and what it costs on top, before paying."""

    minimum: Usd
    maximum: Usd
    card_fee_percent: str
    card_fee_minimum: Usd
    crypto_fee_percent: str
    crypto_fee_minimum: Usd
    refund_window_hours: float
    checkout_expiry_seconds: float


class CreditsSummary(Shape):
    account_id: str
    balance: Usd
    reserved: Usd = Field(description="held by requests in flight")
    available: Usd
    lifetime_purchases: Usd
    total_usage: Usd
    granted: Usd
    refunded: Usd
    expired: Usd
    tier: Literal["basic", "plus"]
    free_model_daily_requests: FreeModelDailyRequests | None
    auto_topup: AutoTopup | None
    auto_topup_available: bool = Field(description="the operator set where top-ups are sent")
    checkout_available: bool = Field(description="the operator set where checkouts are sent")
    purchase_rules: PurchaseRules


class PurchaseRow(Shape):
    """A purchase, or a checkout not paid (yet): the rows of the Credits page."""

    id: str = Field(description="the purchase's id, or the checkout's while it is not paid")
    status: RowStatus
    amount: Usd
    fee: Usd
    total_charged: Usd
    method: Literal["card", "alipay", "crypto"]
    created_at: Time
    checkout_id: str | None = Field(description="the checkout it was bought through")
    checkout_url: str | None = Field(description="where to pay it (pending only)")
    expires_at: Time | None = Field(description="when an unpaid checkout fails (pending only)")
    failure_reason: str | None = Field(description="expired, failed, declined or refused")
    late: bool = Field(description="paid after its checkout had expired or failed")
    refunded: Usd | None
    refundable: Usd = Field(description="what a refund would return now (the fee never)")
    refundable_until: Time | None
    not_refundable_reason: NotRefundable | None


class PurchaseRows(Shape):
    data: list[PurchaseRow]


class Quote(Shape):
    amount: Usd
    fee: Usd
    total_charged: Usd
    method: Literal["card", "alipay", "crypto"]


BILLING_ANSWERS: tuple[type[Shape], ...] = (CreditsSummary, PurchaseRow, PurchaseRows, Quote)
