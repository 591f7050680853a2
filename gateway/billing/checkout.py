"""`POST /api/v1/credits/checkout`: the account holder adds credits.

The gateway opens a pending checkout (once per `Idempotency-Key`), then asks the payment side to
collect it with a signed `checkout.requested` request to GATEWAY_PAYMENTS_REQUEST_URL, whose
answer names the URL where the holder pays. The payment side's signed webhook then pays the
checkout (`payment.succeeded` with its `checkout_id`) or fails it (`payment.failed`); nothing is
credited before that. A checkout nobody pays expires (`checkout_expiry_seconds`).

Asking the same checkout again is safe: the payment side dedupes on the checkout id, which is also
the request's Idempotency-Key. So a call whose request did not get through can be made again with
the same key; concurrent calls with one key wait for the first one's answer instead of asking too.
"""

import asyncio
import time
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from config.settings import Settings
from gateway.api.bodies import NewCheckout, read_as
from gateway.api.consumer import management_key
from gateway.billing.credits_api import WHAT, credits_op
from gateway.billing.payment_requests import signed_exchange
from gateway.billing.rows import checkout_row, purchase_row
from gateway.billing.rules import purchase_fee
from gateway.billing.shapes import PurchaseRow
from gateway.http.describe import BODY_ERRORS, STRING, data_of, described, json_body, ok, ref
from gateway.http.errors import ApiError, bad_request, json_response
from gateway.http.json_input import json_object
from gateway.state import CLOCK, SERVICES, SETTINGS
from metering.ids import random_hex
from metering.money import format_usd, usd_to_nanos
from metering.payments.checkouts import (
    Checkout,
    CheckoutAccountMissing,
    CheckoutConflict,
    TooManyCheckouts,
)
from metering.periods import rfc3339

routes = web.RouteTableDef()
REQUEST_SECONDS = 10.0
MAX_URL_CHARS = 2048
IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "the same key again returns the same checkout (up to 200 characters)",
    "schema": STRING,
}


def checkout_event(checkout: Checkout, return_url: str) -> dict[str, Any]:
    return {
        "id": checkout.id,
        "type": "checkout.requested",
        "created": checkout.created_ms // 1000,
        "data": {
            "account_id": checkout.account_id,
            "checkout_id": checkout.id,
            "amount": format_usd(checkout.amount),
            "fee": format_usd(checkout.fee),
            "total": format_usd(checkout.amount + checkout.fee),
            "method": checkout.method,
            "expires_at": rfc3339(checkout.expires_ms / 1000),
            "return_url": return_url,
        },
    }


def _payment_url(body: bytes) -> str | None:
    """The `url` of the payment side's answer, when it is one a browser can open."""
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    url = answer.get("url") if isinstance(answer, dict) else None
    if not isinstance(url, str) or len(url) > MAX_URL_CHARS:
        return None
    return url if url.startswith(("https://", "http://")) else None


async def _ask_payment_side(
    request: web.Request, settings: Settings, checkout: Checkout
) -> Checkout:
    """The checkout with the URL the payment side answered; a 502 when it gave none."""
    assert settings.payments_request_url and settings.payments_request_secret
    base = settings.public_url.rstrip("/") if settings.public_url else None
    return_url = (
        f"{base}/credits" if base else str(request.url.with_path("/credits").with_query(None))
    )
    timeout = aiohttp.ClientTimeout(total=REQUEST_SECONDS)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        answer = await signed_exchange(
            session,
            settings.payments_request_url,
            settings.payments_request_secret.get_secret_value(),
            checkout_event(checkout, return_url),
            checkout.id,
        )
    checkouts = request.app[SERVICES].checkouts
    if answer is not None and 400 <= answer[0] < 500:
        now = request.app[CLOCK].now()
        await checkouts.close(checkout.account_id, checkout.id, "refused", now)
        raise ApiError(
            502,
            f"the payment side refused this checkout ({answer[0]}); nothing was charged",
            "payment_refused",
        )
    url = None if answer is None or not 200 <= answer[0] < 300 else _payment_url(answer[1])
    if url is None:
        raise _UNAVAILABLE
    await checkouts.set_url(checkout, url)
    return await checkouts.get(checkout.account_id, checkout.id) or checkout


_UNAVAILABLE = ApiError(
    502,
    "the payment side did not answer with where to pay; nothing was charged. Try again with the "
    "same Idempotency-Key",
    "payment_unavailable",
)


async def _with_url(request: web.Request, settings: Settings, checkout: Checkout) -> Checkout:
    """The checkout with where to pay it. One call at a time asks the payment side; calls with
    the same key meanwhile wait for its answer, and answer its failure too (a later call asks
    again)."""
    checkouts = request.app[SERVICES].checkouts
    started_ms = int(time.time() * 1000)
    deadline = time.monotonic() + REQUEST_SECONDS + 1
    while checkout.url is None and checkout.status(int(request.app[CLOCK].now() * 1000)) == (
        "pending"
    ):
        if await checkouts.claim_asking(checkout, REQUEST_SECONDS + 1):
            failed_at = await checkouts.asking_failed_at(checkout)
            if failed_at is not None and failed_at >= started_ms:
                # Claimed just as the call it waited for failed (the failure is written before
                # the claim goes): that failure is this call's answer too.
                await checkouts.asked(checkout, None)
                raise _UNAVAILABLE
            try:
                return await _ask_payment_side(request, settings, checkout)
            except ApiError:
                await checkouts.asked(checkout, int(time.time() * 1000))
                raise
            finally:
                await checkouts.asked(checkout, None)
        await asyncio.sleep(0.05)
        failed_at = await checkouts.asking_failed_at(checkout)
        if (failed_at is not None and failed_at >= started_ms) or time.monotonic() > deadline:
            raise _UNAVAILABLE
        checkout = await checkouts.get(checkout.account_id, checkout.id) or checkout
    return checkout


async def _answer_row(request: web.Request, checkout: Checkout, now_ms: int) -> PurchaseRow:
    """The checkout's row, or once paid the purchase it became."""
    if checkout.purchase_id is not None:
        standings = await request.app[SERVICES].ledger.standings(checkout.account_id)
        for standing in standings:
            if standing.purchase.id == checkout.purchase_id:
                return purchase_row(standing, request.app[SETTINGS], now_ms, checkout.late)
    return checkout_row(checkout, now_ms)


def _idempotency_key(request: web.Request) -> str:
    given = request.headers.get("Idempotency-Key")
    if given is None:
        return "gen-" + random_hex(12)  # no key: every call is a checkout of its own
    if not given.strip() or len(given) > 200:
        raise bad_request(
            "'Idempotency-Key' must be a non-empty string of at most 200 characters",
            "Idempotency-Key",
        )
    return given


@routes.post("/api/v1/credits/checkout")
@described(
    credits_op(
        "Add credits: a pending purchase, and where to pay it (the fee is on top)",
        ok(data_of(ref("PurchaseRow")), "Opened"),
        409,
        502,
        *BODY_ERRORS,
        status="201",
        parameters=[IDEMPOTENCY_KEY],
        body=json_body(ref("NewCheckout")),
        more={"200": ok(data_of(ref("PurchaseRow")), "The same Idempotency-Key again")},
    )
)
async def checkout(request: web.Request) -> web.Response:
    key = await management_key(request, WHAT)
    settings = request.app[SETTINGS]
    wanted = read_as(NewCheckout, await json_object(request), max_usd=settings.max_purchase)
    idempotency_key = _idempotency_key(request)
    if not settings.payments_request_url:
        raise ApiError(
            409,
            "adding credits here needs GATEWAY_PAYMENTS_REQUEST_URL (the operator's payment side)",
            "not_configured",
        )
    now = request.app[CLOCK].now()
    try:
        opened, created = await request.app[SERVICES].checkouts.open(
            key.account_id,
            usd_to_nanos(wanted.amount),
            purchase_fee(settings, wanted.amount, wanted.method),
            wanted.method,
            idempotency_key,
            now,
            lifetime=settings.checkout_expiry_seconds,
            most_open=settings.max_open_checkouts,
        )
    except CheckoutConflict:
        raise ApiError(
            409,
            "this Idempotency-Key was used before with another amount or method",
            "idempotency_conflict",
        ) from None
    except TooManyCheckouts:
        raise ApiError(
            409,
            f"{settings.max_open_checkouts} checkouts are waiting for payment already; pay or "
            "let one expire first",
            "too_many_checkouts",
        ) from None
    except CheckoutAccountMissing:
        raise ApiError(401, "invalid API key", "invalid_api_key") from None
    opened = await _with_url(request, settings, opened)
    answer = {"data": (await _answer_row(request, opened, int(now * 1000))).answer()}
    return json_response(answer, status=201 if created else 200)
