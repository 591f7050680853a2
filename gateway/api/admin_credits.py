"""The admin API's credit operations: auto top-up settings, purchases, refunds and the ledger
(the rest of the admin API: gateway.api.admin)."""

from aiohttp import web

from gateway.api.admin import ACCOUNT_ID, admin_op, existing_account, tier_threshold
from gateway.api.answers import shapes
from gateway.api.answers.views import (
    account_view,
    ledger_entry_view,
    purchase_view,
)
from gateway.api.bodies import (
    NewPurchase,
    read_as,
)
from gateway.billing.auto_topup import apply_auto_topup
from gateway.billing.rules import purchase_fee, refund_refusal
from gateway.http.describe import (
    BODY_ERRORS,
    INTEGER,
    STRING,
    described,
    json_body,
    ok,
    path,
    query,
    ref,
)
from gateway.http.errors import ApiError, bad_request, json_response
from gateway.http.json_input import json_object
from gateway.observability.metrics import REFUNDS, count_purchase
from gateway.state import CLOCK, SERVICES, SETTINGS
from metering.accounts import (
    AccountNotFound,
    AmountTooLarge,
    IdempotencyConflict,
    PaymentMethod,
    account_of_purchase,
)
from metering.ledger import RefundRefused
from metering.money import NANOS_PER_USD, format_usd

routes = web.RouteTableDef()


@routes.put("/admin/v1/accounts/{account_id}/auto-topup")
@described(
    admin_op(
        "Turn auto top-up on (threshold and amount) or off (null)",
        ok(ref("Account")),
        404,
        409,
        *BODY_ERRORS,
        parameters=[ACCOUNT_ID],
        body=json_body({"oneOf": [{"type": "null"}, ref("AutoTopupSettings")]}, required=False),
    )
)
async def put_auto_topup(request: web.Request) -> web.Response:
    """`{"threshold": "5.00", "amount": "20.00"}` turns it on, `null` (or `{}`) off."""
    account_id = await existing_account(request)
    await apply_auto_topup(request, account_id)
    outbox = request.app[SERVICES].outbox
    topup = await outbox.auto_topup(account_id)
    account = await request.app[SERVICES].accounts.get_account(account_id)
    assert account is not None
    return json_response(account_view(account, tier_threshold(request), topup).answer())


@routes.post("/admin/v1/accounts/{account_id}/purchases")
@described(
    admin_op(
        "Credit a purchase (the fee is on top); idempotent on idempotency_key",
        ok(ref("Purchase"), "Credited"),
        404,
        409,
        *BODY_ERRORS,
        status="201",
        parameters=[ACCOUNT_ID],
        body=json_body(ref("NewPurchase")),
        more={"200": ok(ref("Purchase"), "The same idempotency key again: the first purchase")},
    )
)
async def create_purchase(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    body = read_as(NewPurchase, await json_object(request), max_usd=settings.max_purchase)
    amount, method, idempotency_key = body.amount, body.method, body.idempotency_key
    fee = purchase_fee(settings, amount, method)
    paid_with: PaymentMethod = method
    try:
        purchase, created = await request.app[SERVICES].accounts.purchase(
            request.match_info["account_id"],
            amount,
            fee,
            paid_with,
            idempotency_key,
            request.app[CLOCK].now(),
        )
    except AccountNotFound:
        raise ApiError(404, "no such account", "not_found") from None
    except IdempotencyConflict:
        raise ApiError(
            409,
            "this idempotency_key was used before with a different purchase",
            "idempotency_conflict",
        ) from None
    except AmountTooLarge:
        raise bad_request(
            "this purchase would take the balance past what can be held", "amount"
        ) from None
    if created:
        count_purchase(purchase)
    return json_response(purchase_view(purchase).answer(), status=201 if created else 200)


@routes.post("/admin/v1/purchases/{purchase_id}/refund")
@described(
    admin_op(
        "Refund what is unused of a purchase",
        ok(ref("Refund")),
        404,
        409,
        parameters=[path("purchase_id", "a purchase id")],
    )
)
async def refund_purchase(request: web.Request) -> web.Response:
    """Refund the unused part of a purchase made within `refund_window_hours` (default 24)."""
    purchase_id = request.match_info["purchase_id"]
    account_id = account_of_purchase(purchase_id)
    if account_id is None:
        raise ApiError(404, "no such purchase", "not_found")
    settings = request.app[SETTINGS]
    try:
        refund = await request.app[SERVICES].ledger.refund(
            account_id, purchase_id, request.app[CLOCK].now(), settings.refund_window_hours * 3600
        )
        if refund.first_time:
            REFUNDS.inc(refund.refunded / NANOS_PER_USD)
    except RefundRefused as exc:
        raise refund_refusal(settings, exc.reason) from None
    answer = shapes.Refund(
        purchase_id=refund.purchase_id,
        refunded=format_usd(refund.refunded),
        fee_refunded="0.00",
        fee_kept=format_usd(refund.fee),
        created_at=refund.created_at,
    )
    return json_response(answer.answer())


@routes.get("/admin/v1/accounts/{account_id}/ledger")
@described(
    admin_op(
        "Every movement of credit, newest first",
        ok(ref("LedgerPage")),
        400,
        404,
        parameters=[
            ACCOUNT_ID,
            query("cursor", STRING, "the `next_cursor` of the previous page (another is a 400)"),
            query("limit", INTEGER, "page size (1 to 1000, 100)"),
        ],
    )
)
async def ledger(request: web.Request) -> web.Response:
    """Every movement of credit, newest first; the entries sum to the balance."""
    account_id = await existing_account(request)
    before = _ledger_cursor(request.query.get("cursor"))
    try:
        limit = min(max(int(request.query.get("limit", "100")), 1), 1000)
    except ValueError:
        raise bad_request("'limit' must be a whole number from 1 to 1000", "limit") from None
    entries, more = await request.app[SERVICES].ledger.entries(account_id, before, limit)
    page = shapes.LedgerPage(
        data=[ledger_entry_view(e) for e in entries],
        next_cursor=None if more is None else f"{more[0]}:{more[1]}",
    )
    return json_response(page.answer())


def _ledger_cursor(text: str | None) -> tuple[int, str] | None:
    if not text:
        return None
    ms, _, entry_id = text.partition(":")
    if not (ms.isascii() and ms.isdigit()) or not entry_id or len(text) > 100:
        raise bad_request("'cursor' is not one this API gave out", "cursor")
    return int(ms), entry_id
