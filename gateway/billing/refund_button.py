"""`POST /api/v1/credits/purchases/{purchase_id}/refund`: the Credits page's Refund button.

The same rules as the operator's refund (within `refund_window_hours`, the unused part only, the
fee kept, crypto never), and once per purchase: asking again answers the refund made. The refund
script queues a signed `refund.requested` event for the payment side in the same step that takes
the credit back (gateway.tasks.outbox_delivery), so the money follows even across a crash.
"""

from aiohttp import web

from gateway.api.answers import shapes
from gateway.api.consumer import management_key
from gateway.billing.credits_api import WHAT, credits_op
from gateway.billing.rules import refund_refusal
from gateway.http.describe import data_of, described, ok, path, ref
from gateway.http.errors import ApiError, json_response
from gateway.observability.metrics import REFUNDS
from gateway.state import CLOCK, SERVICES, SETTINGS
from metering.accounts import account_of_purchase
from metering.ledger import Refund, RefundRefused
from metering.money import NANOS_PER_USD, format_usd
from metering.payments.outbox import new_event_id


def explanation(refund: Refund, purchase_amount: int) -> str:
    kept = purchase_amount - refund.refunded
    said = f"Refunded ${format_usd(refund.refunded)} of the ${format_usd(purchase_amount)} purchase"
    if kept > 0:
        said += (
            f"; ${format_usd(kept)} of it was used or expired before the refund (credits are "
            "used oldest purchase first)"
        )
    return said + f". The fee of ${format_usd(refund.fee)} is never refunded."


routes = web.RouteTableDef()


@routes.post("/api/v1/credits/purchases/{purchase_id}/refund")
@described(
    credits_op(
        "Refund what is unused of a purchase (the Refund button); the payment side is told",
        ok(data_of(ref("Refund"))),
        404,
        409,
        parameters=[path("purchase_id", "a purchase id of the calling key's account")],
    )
)
async def refund_button(request: web.Request) -> web.Response:
    key = await management_key(request, WHAT)
    purchase_id = request.match_info["purchase_id"]
    if account_of_purchase(purchase_id) != key.account_id:
        raise ApiError(404, "no such purchase in this account", "not_found")
    settings = request.app[SETTINGS]
    if not settings.payments_request_url:
        raise ApiError(
            409,
            "refunds here need GATEWAY_PAYMENTS_REQUEST_URL to return the money",
            "not_configured",
        )
    services = request.app[SERVICES]
    purchase = await services.accounts.get_purchase(key.account_id, purchase_id)
    if purchase is None:
        raise ApiError(404, "no such purchase in this account", "not_found")
    if purchase.source != "payment_side":
        raise refund_refusal(settings, "operator_credited")
    try:
        refund = await services.ledger.refund(
            key.account_id,
            purchase_id,
            request.app[CLOCK].now(),
            settings.refund_window_hours * 3600,
            notify_event_id=new_event_id(key.account_id),
        )
    except RefundRefused as exc:
        raise refund_refusal(settings, exc.reason) from None
    if refund.first_time:
        REFUNDS.inc(refund.refunded / NANOS_PER_USD)
    answer = shapes.Refund(
        purchase_id=refund.purchase_id,
        refunded=format_usd(refund.refunded),
        fee_refunded="0.00",
        fee_kept=format_usd(refund.fee),
        created_at=refund.created_at,
        purchase_amount=format_usd(purchase.amount),
        not_refunded=format_usd(purchase.amount - refund.refunded),
        explanation=explanation(refund, purchase.amount),
    )
    return json_response({"data": answer.answer()})
