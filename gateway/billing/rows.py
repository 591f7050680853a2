"""The rows of the Credits page: each purchase with what a refund would return now (or why
nothing), and each checkout not paid (yet). A paid checkout is shown by its purchase."""

from config.settings import Settings
from gateway.billing.shapes import NotRefundable, PurchaseRow, RowStatus
from metering.ledger import PurchaseStanding
from metering.money import format_usd
from metering.payments.checkouts import Checkout
from metering.periods import rfc3339


def purchase_row(
    standing: PurchaseStanding, settings: Settings, now_ms: int, late: bool = False
) -> PurchaseRow:
    purchase = standing.purchase
    window_ms = int(settings.refund_window_hours * 3_600_000)
    until_ms = purchase.created_at_ms + window_ms
    reason: NotRefundable | None = None
    if standing.refunded is not None:
        reason = "refunded"
    elif purchase.source != "payment_side":
        reason = "operator_credited"
    elif purchase.method == "crypto":
        reason = "crypto"
    elif now_ms >= until_ms:
        reason = "window_passed"
    elif standing.unused <= 0:
        reason = "used_up"
    status: RowStatus = "completed"
    if standing.refunded is not None:
        status = "refunded" if standing.refunded >= purchase.amount else "partially_refunded"
    return PurchaseRow(
        id=purchase.id,
        status=status,
        amount=format_usd(purchase.amount),
        fee=format_usd(purchase.fee),
        total_charged=format_usd(purchase.amount + purchase.fee),
        method=purchase.method,  # type: ignore[arg-type]
        created_at=purchase.created_at,
        checkout_id=purchase.checkout_id or None,
        checkout_url=None,
        expires_at=None,
        failure_reason=None,
        late=late,
        refunded=None if standing.refunded is None else format_usd(standing.refunded),
        refundable=format_usd(standing.unused if reason is None else 0),
        refundable_until=None
        if reason in ("crypto", "refunded", "operator_credited")
        else rfc3339(until_ms / 1000),
        not_refundable_reason=reason,
    )


def checkout_row(checkout: Checkout, now_ms: int) -> PurchaseRow:
    status = checkout.status(now_ms)
    pending = status == "pending"
    return PurchaseRow(
        id=checkout.id,
        status=status,
        amount=format_usd(checkout.amount),
        fee=format_usd(checkout.fee),
        total_charged=format_usd(checkout.amount + checkout.fee),
        method=checkout.method,  # type: ignore[arg-type]
        created_at=rfc3339(checkout.created_ms / 1000),
        checkout_id=checkout.id,
        checkout_url=checkout.url if pending else None,
        expires_at=rfc3339(checkout.expires_ms / 1000) if pending else None,
        failure_reason=checkout.failure_reason(now_ms),
        late=False,
        refunded=None,
        refundable="0.00",
        refundable_until=None,
        not_refundable_reason="not_paid",
    )


def rows(
    standings: list[PurchaseStanding], checkouts: list[Checkout], settings: Settings, now_ms: int
) -> list[PurchaseRow]:
    """Newest first: the purchases, and the checkouts that did not become one."""
    late = {c.id for c in checkouts if c.late}
    made = [
        (
            s.purchase.created_at_ms,
            purchase_row(s, settings, now_ms, s.purchase.checkout_id in late),
        )
        for s in standings
    ]
    unpaid = [(c.created_ms, checkout_row(c, now_ms)) for c in checkouts if c.purchase_id is None]
    return [row for _, row in sorted(made + unpaid, key=lambda r: r[0], reverse=True)]
