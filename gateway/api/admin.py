"""The operator's admin API (Bearer GATEWAY_ADMIN_TOKEN): accounts, keys, purchases.

With no admin token configured the whole API answers 403 and says how to turn it on. The token is
compared in constant time.
"""

from typing import Any

from aiohttp import web

from gateway.api.bodies import (
    AutoTopupSettings,
    KeyChanges,
    NewAccount,
    NewKey,
    NewPurchase,
    read_as,
)
from gateway.api.key_input import key_changes, new_key_fields
from gateway.api.views import (
    account_view,
    duration_text,
    key_admin_view,
    ledger_entry_view,
    purchase_view,
)
from gateway.http.auth import admin_token_matches
from gateway.http.errors import ApiError, bad_request, json_response
from gateway.http.json_input import json_object, read_body
from gateway.limits import LIMITS
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
from metering.money import NANOS_PER_USD, fee_nanos, format_usd, usd_to_nanos
from ratelimit.policy import UNLIMITED

routes = web.RouteTableDef()
ADMIN_PREFIX = "/admin/"
LIMIT_RESETS = ("daily", "weekly", "monthly")


def guard_admin(request: web.Request) -> None:
    """Every path under /admin/ (known or not) needs the admin token; raises the 401 or 403."""
    if request.path.startswith(ADMIN_PREFIX):
        settings = request.app[SETTINGS]
        if not settings.admin_enabled:
            raise ApiError(
                403, "the admin API is off: set GATEWAY_ADMIN_TOKEN to turn it on", "forbidden"
            )
        assert settings.admin_token is not None
        if not admin_token_matches(request, settings.admin_token.get_secret_value()):
            raise ApiError(401, "missing or wrong admin token", "invalid_admin_token")


def _tier_threshold(request: web.Request) -> int:
    return usd_to_nanos(request.app[SETTINGS].tier_purchase_threshold)


@routes.post("/admin/v1/accounts")
async def create_account(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    body = read_as(NewAccount, await json_object(request), max_usd=settings.max_purchase)
    grant = settings.new_account_grant if body.grant is None else body.grant
    account = await request.app[SERVICES].accounts.create_account(
        body.name or "", usd_to_nanos(grant), request.app[CLOCK].now()
    )
    return json_response(account_view(account, _tier_threshold(request)), status=201)


@routes.get("/admin/v1/accounts/{account_id}")
async def get_account(request: web.Request) -> web.Response:
    account = await request.app[SERVICES].accounts.get_account(request.match_info["account_id"])
    if account is None:
        raise ApiError(404, "no such account", "not_found")
    topup = await request.app[SERVICES].outbox.auto_topup(account.id)
    return json_response(account_view(account, _tier_threshold(request), topup))


@routes.put("/admin/v1/accounts/{account_id}/auto-topup")
async def put_auto_topup(request: web.Request) -> web.Response:
    """`{"threshold": "5.00", "amount": "20.00"}` turns it on, `null` (or `{}`) off."""
    account_id = await _existing_account(request)
    raw = await read_body(request)
    body = {} if raw.strip() in (b"", b"null") else await json_object(request)
    settings = request.app[SETTINGS]
    wanted = read_as(AutoTopupSettings, body, max_usd=settings.max_purchase)
    threshold, amount = wanted.threshold, wanted.amount
    if (threshold is None) != (amount is None):
        raise bad_request(
            "give both 'threshold' and 'amount', or neither to turn it off",
            "threshold" if threshold is None else "amount",
        )
    if threshold is not None and not settings.topup_webhook_url:
        raise ApiError(
            409,
            "auto top-up needs GATEWAY_TOPUP_WEBHOOK_URL to send its requests",
            "not_configured",
        )
    outbox = request.app[SERVICES].outbox
    await outbox.set_auto_topup(account_id, threshold, amount)
    topup = await outbox.auto_topup(account_id)
    account = await request.app[SERVICES].accounts.get_account(account_id)
    assert account is not None
    return json_response(account_view(account, _tier_threshold(request), topup))


@routes.post("/admin/v1/accounts/{account_id}/keys")
async def create_key(request: web.Request) -> web.Response:
    now = request.app[CLOCK].now()
    body = read_as(
        NewKey, await json_object(request), max_usd=request.app[SETTINGS].max_purchase, now=now
    )
    fields = new_key_fields(body)
    management = body.management or False
    try:
        secret, key = await request.app[SERVICES].accounts.create_key(
            request.match_info["account_id"], now=now, management=management, **fields
        )
    except AccountNotFound:
        raise ApiError(404, "no such account", "not_found") from None
    return json_response({"key": secret, **key_admin_view(key)}, status=201)


@routes.patch("/admin/v1/keys/{key_hash}")
async def update_key(request: web.Request) -> web.Response:
    changes = key_changes(
        read_as(
            KeyChanges,
            await json_object(request),
            max_usd=request.app[SETTINGS].max_purchase,
            now=request.app[CLOCK].now(),
        )
    )
    services = request.app[SERVICES]
    key_hash = request.match_info["key_hash"]
    key = await services.accounts.update_key(key_hash, request.app[CLOCK].now(), **changes)
    if key is None:
        raise ApiError(404, "no such key", "not_found")
    return json_response(key_admin_view(key))


@routes.post("/admin/v1/accounts/{account_id}/purchases")
async def create_purchase(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    body = read_as(NewPurchase, await json_object(request), max_usd=settings.max_purchase)
    amount, method, idempotency_key = body.amount, body.method, body.idempotency_key
    if method == "crypto":
        fee = fee_nanos(amount, settings.crypto_fee_percent, settings.crypto_fee_minimum)
    else:
        fee = fee_nanos(amount, settings.card_fee_percent, settings.card_fee_minimum)
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
    return json_response(purchase_view(purchase), status=201 if created else 200)


@routes.get("/admin/v1/accounts/{account_id}/limits")
async def get_limits(request: web.Request) -> web.Response:
    account_id = await _existing_account(request)
    return json_response(await _limits_view(request, account_id))


@routes.put("/admin/v1/accounts/{account_id}/limits")
async def put_limits(request: web.Request) -> web.Response:
    """Override an account's limits by name: a count, "unlimited", or null to drop the override.

    `{"free-per-day": 5000, "free-per-minute": "unlimited"}`; limits not named keep their state.
    """
    account_id = await _existing_account(request)
    body = await json_object(request)
    policy = request.app[LIMITS].policy
    changes: dict[str, int | None] = {}
    for name, value in body.items():
        if policy.get(name) is None:
            raise bad_request(f"no limit named {name!r} in the rate-limit file", name)
        if value is None:
            changes[name] = None
        elif value == "unlimited":
            changes[name] = UNLIMITED
        elif isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 10**9:
            changes[name] = value
        else:
            raise bad_request(
                f"'{name}' must be a whole number of requests, \"unlimited\" or null", name
            )
    await request.app[SERVICES].limits.set_overrides(account_id, changes)
    return json_response(await _limits_view(request, account_id))


async def _existing_account(request: web.Request) -> str:
    account = await request.app[SERVICES].accounts.get_account(request.match_info["account_id"])
    if account is None:
        raise ApiError(404, "no such account", "not_found")
    return account.id


async def _limits_view(request: web.Request, account_id: str) -> dict[str, Any]:
    overrides = await request.app[SERVICES].limits.overrides(account_id)
    return {
        "account_id": account_id,
        "overrides": {
            name: "unlimited" if value == UNLIMITED else value for name, value in overrides.items()
        },
        "limits": [c.name for c in request.app[LIMITS].policy.limits],
    }


@routes.post("/admin/v1/purchases/{purchase_id}/refund")
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
        if exc.reason == "not_found":
            raise ApiError(404, "no such purchase", "not_found") from None
        window = settings.refund_window_hours * 3600
        message = _REFUSALS[exc.reason].format(window=duration_text(window))
        raise ApiError(
            409,
            message,
            "refund_refused",
            reason=exc.reason,
            refund_window_hours=settings.refund_window_hours,
        ) from None
    return json_response(
        {
            "purchase_id": refund.purchase_id,
            "refunded": format_usd(refund.refunded),
            "fee_refunded": "0.00",
            "fee_kept": format_usd(refund.fee),
            "created_at": refund.created_at,
        }
    )


_REFUSALS = {
    "crypto": "crypto purchases are never refundable",
    "too_old": "purchases are refundable only within {window} of the purchase",
    "nothing_left": "nothing of this purchase is left unused to refund (credits are used oldest "
    "purchase first)",
    "in_flight": "part of what is unused of this purchase is held by requests in flight; try "
    "again when they finish",
}


@routes.get("/admin/v1/accounts/{account_id}/ledger")
async def ledger(request: web.Request) -> web.Response:
    """Every movement of credit, newest first; the entries sum to the balance."""
    account_id = await _existing_account(request)
    before = _ledger_cursor(request.query.get("cursor"))
    try:
        limit = min(max(int(request.query.get("limit", "100")), 1), 1000)
    except ValueError:
        raise bad_request("'limit' must be a whole number from 1 to 1000", "limit") from None
    entries, more = await request.app[SERVICES].ledger.entries(account_id, before, limit)
    return json_response(
        {
            "data": [ledger_entry_view(e) for e in entries],
            "next_cursor": None if more is None else f"{more[0]}:{more[1]}",
        }
    )


def _ledger_cursor(text: str | None) -> tuple[int, str] | None:
    if not text:
        return None
    ms, _, entry_id = text.partition(":")
    if not (ms.isascii() and ms.isdigit()) or not entry_id or len(text) > 100:
        raise bad_request("'cursor' is not one this API gave out", "cursor")
    return int(ms), entry_id
