"""Payment notifications in: `POST /webhooks/payments`, signed (see gateway.api.signing).

    {"id": "evt_1", "type": "payment.succeeded",
     "data": {"account_id": "...", "amount": "10.00", "method": "card", "payment_id": "pay_1"}}
    {"id": "evt_2", "type": "payment.refunded",
     "data": {"account_id": "...", "payment_id": "pay_1"}}
    {"id": "evt_3", "type": "payment.failed",
     "data": {"account_id": "...", "topup_id": "<the topup.requested event id>"}}
    {"id": "evt_4", "type": "payment.succeeded",
     "data": {..., "payment_id": "pay_2", "checkout_id": "<the checkout.requested checkout>"}}
    {"id": "evt_5", "type": "payment.failed",
     "data": {"account_id": "...", "checkout_id": "<the checkout that will not be paid>"}}

A payment credits its amount once, whatever the number of deliveries (the payment id is the
purchase's idempotency key), and completes the checkout it names, even one that had expired or
failed (money received is never lost; the ledger says it came late); a refund takes back what is
unused of that purchase, whenever it comes (the payment side has already returned the money).
A bad signature is 401, a stale one 400, and neither changes anything.
"""

import orjson
from aiohttp import web

from gateway.api.answers.shapes import PaymentReceived
from gateway.api.answers.views import purchase_view
from gateway.api.bodies import (
    PAYMENT_EVENTS,
    PaymentRefunded,
    PaymentSucceeded,
    PaymentSucceededData,
    read_as,
)
from gateway.api.signing import SIGNATURE_HEADER, BadSignature, StaleSignature, verify
from gateway.billing.rules import purchase_fee
from gateway.http.describe import (
    OPEN,
    STRING,
    described,
    errors,
    json_body,
    ok,
    op,
    ref,
)
from gateway.http.errors import ApiError, bad_request, json_response
from gateway.http.json_input import read_body
from gateway.observability.metrics import REFUNDS, count_purchase
from gateway.state import CLOCK, SERVICES, SETTINGS
from metering.accounts import AccountNotFound, AmountTooLarge, IdempotencyConflict
from metering.ledger import RefundRefused
from metering.money import NANOS_PER_USD, format_usd, usd_to_nanos
from metering.payments.checkouts import account_of_checkout

routes = web.RouteTableDef()
MAX_WEBHOOK_BYTES = 64 * 1024
FOREVER_SECONDS = 100 * 365 * 86_400.0


SIGNATURE = {
    "name": "Gateway-Signature",
    "in": "header",
    "required": True,
    "description": "t=<unix seconds>,v1=<hex HMAC-SHA256 of `<t>.<raw body>`>",
    "schema": STRING,
}


@routes.post("/webhooks/payments")
@described(
    op(
        "Payment notifications, signed (payment.succeeded, .refunded, .failed)",
        "webhooks",
        OPEN,
        {"200": ok(ref("PaymentReceived"), "Received"), **errors(400, 401, 404, 409, 413, 503)},
        parameters=[SIGNATURE],
        body=json_body(
            {
                "oneOf": [
                    ref(name) for name in ("PaymentSucceeded", "PaymentRefunded", "PaymentFailed")
                ]
            }
        ),
    )
)
async def payments(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    secret = settings.payments_webhook_secret
    if secret is None or not secret.get_secret_value():
        raise ApiError(404, "payment webhooks are off: set GATEWAY_PAYMENTS_WEBHOOK_SECRET")
    if request.content_length is not None and request.content_length > MAX_WEBHOOK_BYTES:
        raise ApiError(413, f"webhook body is larger than {MAX_WEBHOOK_BYTES} bytes")
    raw = await read_body(request)
    try:
        verify(
            secret.get_secret_value(),
            raw,
            request.headers.get(SIGNATURE_HEADER),
            request.app[CLOCK].now(),
        )
    except BadSignature as exc:
        raise ApiError(401, f"bad webhook signature: {exc}", "invalid_signature") from None
    except StaleSignature as exc:
        raise ApiError(400, str(exc), "stale_signature") from None
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise bad_request("webhook body is not valid JSON") from None
    kind = body.get("type") if isinstance(body, dict) else None
    model = PAYMENT_EVENTS.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise bad_request(
            "'type' must be payment.succeeded, payment.refunded or payment.failed", "type"
        )
    event = read_as(model, body, max_usd=settings.max_purchase)
    if not event.data.account_id.isalnum():
        raise ApiError(404, "no such account", "not_found")
    if isinstance(event, PaymentSucceeded):
        return await _succeeded(request, event.data)
    if isinstance(event, PaymentRefunded):
        return await _refunded(request, event.data.account_id, event.data.payment_id)
    account_id, topup_id, checkout_id = (
        event.data.account_id,
        event.data.topup_id,
        event.data.checkout_id,
    )
    if checkout_id is not None:
        _own_checkout(account_id, checkout_id)
        closed = await request.app[SERVICES].checkouts.close(
            account_id, checkout_id, "failed", request.app[CLOCK].now()
        )
        return json_response(PaymentReceived(received=True, checkout_closed=closed).answer())
    cleared = bool(topup_id) and await request.app[SERVICES].outbox.answered(
        account_id, topup_id or ""
    )
    return json_response(PaymentReceived(received=True, topup_cleared=cleared).answer())


def _own_checkout(account_id: str, checkout_id: str) -> None:
    if account_of_checkout(checkout_id) != account_id:
        raise bad_request("'checkout_id' is not a checkout of this account", "checkout_id")


async def _succeeded(request: web.Request, data: PaymentSucceededData) -> web.Response:
    settings, services = request.app[SETTINGS], request.app[SERVICES]
    amount, method, checkout_id = data.amount, data.method, data.checkout_id or ""
    fee = purchase_fee(settings, amount, method)
    if checkout_id:
        _own_checkout(data.account_id, checkout_id)
        checkout = await services.checkouts.get(data.account_id, checkout_id)
        if checkout and checkout.amount == usd_to_nanos(amount) and checkout.method == method:
            fee = checkout.fee  # the fee shown before paying, whatever the settings are now
    try:
        purchase, created = await services.accounts.purchase(
            data.account_id,
            amount,
            fee,
            method,
            data.payment_id,
            request.app[CLOCK].now(),
            checkout_id,
            source="payment_side",
        )
    except AccountNotFound:
        raise ApiError(404, "no such account", "not_found") from None
    except IdempotencyConflict:
        raise ApiError(
            409, "this payment id was credited before with another amount", "idempotency_conflict"
        ) from None
    except AmountTooLarge:
        raise bad_request(
            "this payment would take the balance past what can be held", "amount"
        ) from None
    if created:
        count_purchase(purchase)
    answer = PaymentReceived(received=True, duplicate=not created, purchase=purchase_view(purchase))
    if purchase.checkout_id:
        paid = await services.checkouts.get(data.account_id, purchase.checkout_id)
        late = bool(paid and paid.late and paid.purchase_id == purchase.id)
        answer = answer.model_copy(update={"late": late})
    return json_response(answer.answer())


async def _refunded(request: web.Request, account_id: str, payment_id: str) -> web.Response:
    services = request.app[SERVICES]
    purchase = await services.accounts.purchase_by_idempotency(account_id, payment_id)
    if purchase is None:
        raise ApiError(404, "no purchase for this payment id", "not_found")
    try:
        refund = await services.ledger.refund(
            account_id,
            purchase.id,
            request.app[CLOCK].now(),
            FOREVER_SECONDS,
            already_paid_back=True,
        )
        refunded = format_usd(refund.refunded)
        if refund.first_time:
            REFUNDS.inc(refund.refunded / NANOS_PER_USD)
    except RefundRefused as exc:
        if exc.reason != "nothing_left":
            raise ApiError(409, f"refund refused: {exc.reason}", "refund_refused") from None
        refunded = "0.00"  # all of it was used: acknowledged, nothing to take back
    answer = PaymentReceived(received=True, purchase_id=purchase.id, refunded=refunded)
    return json_response(answer.answer())
