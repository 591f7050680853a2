"""The account holder's Credits API, with a management key (an ordinary key gets 403): the
account's standing, its purchases, the fee of a purchase before paying, and auto top-up. Buying
is gateway.billing.checkout; the Refund button, gateway.billing.refund_button."""

from typing import Any

from aiohttp import web

from gateway.api.answers.views import account_view
from gateway.api.bodies import NewCheckout, read_as
from gateway.api.consumer import free_daily_requests, management_key
from gateway.billing.auto_topup import apply_auto_topup
from gateway.billing.rows import rows
from gateway.billing.rules import purchase_fee
from gateway.billing.shapes import CreditsSummary, PurchaseRows, PurchaseRules, Quote
from gateway.http.describe import (
    BODY_ERRORS,
    MANAGEMENT_KEY,
    MANAGER_ERRORS,
    STRING,
    data_of,
    described,
    errors,
    json_body,
    ok,
    op,
    query,
    ref,
)
from gateway.http.errors import ApiError, json_response
from gateway.state import CLOCK, SERVICES, SETTINGS
from metering.accounts import ApiKey
from metering.money import format_usd, usd_to_nanos

routes = web.RouteTableDef()
WHAT = "the Credits API"


def credits_op(
    summary: str,
    answer: dict[str, Any],
    *statuses: int,
    status: str = "200",
    parameters: list[Any] | None = None,
    body: dict[str, Any] | None = None,
    more: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An operation of the Credits API: a management key's, with the errors it may give."""
    responses = {status: answer, **(more or {}), **errors(*statuses, *MANAGER_ERRORS)}
    return op(summary, "credits", MANAGEMENT_KEY, responses, parameters=parameters, body=body)


async def summary_of(request: web.Request, key: ApiKey) -> CreditsSummary:
    services, settings = request.app[SERVICES], request.app[SETTINGS]
    account = await services.accounts.get_account(key.account_id)
    if account is None:
        raise ApiError(401, "invalid API key", "invalid_api_key")
    topup = await services.outbox.auto_topup(account.id)
    view = account_view(account, usd_to_nanos(settings.tier_purchase_threshold), topup)
    return CreditsSummary(
        account_id=view.id,
        balance=view.balance,
        reserved=view.reserved,
        available=view.available,
        lifetime_purchases=view.lifetime_purchases,
        total_usage=view.total_usage,
        granted=view.granted,
        refunded=view.refunded,
        expired=view.expired,
        tier=view.tier,
        free_model_daily_requests=await free_daily_requests(request, key, account),
        auto_topup=view.auto_topup,
        auto_topup_available=bool(settings.topup_webhook_url),
        checkout_available=bool(settings.payments_request_url),
        purchase_rules=PurchaseRules(
            minimum="0.01",
            maximum=format_usd(usd_to_nanos(settings.max_purchase)),
            card_fee_percent=str(settings.card_fee_percent),
            card_fee_minimum=format_usd(usd_to_nanos(settings.card_fee_minimum)),
            crypto_fee_percent=str(settings.crypto_fee_percent),
            crypto_fee_minimum=format_usd(usd_to_nanos(settings.crypto_fee_minimum)),
            refund_window_hours=settings.refund_window_hours,
            checkout_expiry_seconds=settings.checkout_expiry_seconds,
        ),
    )


@routes.get("/api/v1/credits/summary")
@described(
    credits_op(
        "Balance, reserved, available, tier, free requests left today, auto top-up",
        ok(data_of(ref("CreditsSummary"))),
    )
)
async def summary(request: web.Request) -> web.Response:
    key = await management_key(request, WHAT)
    return json_response({"data": (await summary_of(request, key)).answer()})


@routes.get("/api/v1/credits/purchases")
@described(
    credits_op(
        "The account's purchases and unpaid checkouts, newest first, with what is refundable",
        ok(ref("PurchaseRows")),
    )
)
async def purchases(request: web.Request) -> web.Response:
    key = await management_key(request, WHAT)
    services = request.app[SERVICES]
    standings = await services.ledger.standings(key.account_id)
    checkouts = await services.checkouts.all(key.account_id)
    now_ms = int(request.app[CLOCK].now() * 1000)
    found = rows(standings, checkouts, request.app[SETTINGS], now_ms)
    return json_response(PurchaseRows(data=found).answer())


@routes.get("/api/v1/credits/quote")
@described(
    credits_op(
        "What a purchase costs with its fee, before paying",
        ok(data_of(ref("Quote"))),
        400,
        parameters=[
            query("amount", STRING, "USD in whole cents, such as 10.00", required=True),
            query("method", STRING, "card (default), alipay or crypto"),
        ],
    )
)
async def quote(request: web.Request) -> web.Response:
    await management_key(request, WHAT)
    settings = request.app[SETTINGS]
    asked = {"amount": request.query.get("amount"), "method": request.query.get("method", "card")}
    wanted = read_as(NewCheckout, asked, max_usd=settings.max_purchase)
    fee = purchase_fee(settings, wanted.amount, wanted.method)
    amount = usd_to_nanos(wanted.amount)
    answer = Quote(
        amount=format_usd(amount),
        fee=format_usd(fee),
        total_charged=format_usd(amount + fee),
        method=wanted.method,
    )
    return json_response({"data": answer.answer()})


@routes.put("/api/v1/credits/auto-topup")
@described(
    credits_op(
        "Turn auto top-up on (threshold and amount) or off (null)",
        ok(data_of(ref("CreditsSummary"))),
        409,
        *BODY_ERRORS,
        body=json_body({"oneOf": [{"type": "null"}, ref("AutoTopupSettings")]}, required=False),
    )
)
async def put_auto_topup(request: web.Request) -> web.Response:
    key = await management_key(request, WHAT)
    await apply_auto_topup(request, key.account_id)
    return json_response({"data": (await summary_of(request, key)).answer()})
