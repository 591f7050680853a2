"""The operator's admin API (Bearer GATEWAY_ADMIN_TOKEN): accounts, keys, purchases.

With no admin token configured the whole API answers 403 and says how to turn it on. The token is
compared in constant time.
"""

from typing import Any

from aiohttp import web

from gateway.api.answers import shapes
from gateway.api.answers.views import (
    account_view,
    key_admin_view,
)
from gateway.api.bodies import (
    KeyChanges,
    LimitOverrides,
    NewAccount,
    NewKey,
    read_as,
)
from gateway.api.key_input import key_changes, new_key_fields
from gateway.http.auth import admin_token_matches
from gateway.http.describe import (
    ADMIN,
    ADMIN_ERRORS,
    BODY_ERRORS,
    STRING,
    described,
    errors,
    json_body,
    obj,
    ok,
    op,
    path,
    ref,
)
from gateway.http.errors import ApiError, json_response
from gateway.http.json_input import json_object
from gateway.limits import LIMITS
from gateway.state import CLOCK, SERVICES, SETTINGS
from metering.accounts import (
    AccountNotFound,
)
from metering.money import usd_to_nanos
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


def tier_threshold(request: web.Request) -> int:
    return usd_to_nanos(request.app[SETTINGS].tier_purchase_threshold)


ACCOUNT_ID = path("account_id", "an account id")


def admin_op(
    summary: str,
    answer: dict[str, Any],
    *extra: int,
    status: str = "200",
    more: dict[str, Any] | None = None,
    parameters: list[Any] | None = None,
    body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An operation of the admin API (the admin token), with the errors every one may give."""
    responses = {status: answer, **(more or {}), **errors(*extra, *ADMIN_ERRORS)}
    return op(summary, "admin", ADMIN, responses, parameters=parameters, body=body)


@routes.post("/admin/v1/accounts")
@described(
    admin_op(
        "Open an account",
        ok(ref("Account"), "Opened"),
        *BODY_ERRORS,
        status="201",
        body=json_body(ref("NewAccount"), required=False),
    )
)
async def create_account(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    body = read_as(NewAccount, await json_object(request), max_usd=settings.max_purchase)
    grant = settings.new_account_grant if body.grant is None else body.grant
    account = await request.app[SERVICES].accounts.create_account(
        body.name or "", usd_to_nanos(grant), request.app[CLOCK].now()
    )
    return json_response(account_view(account, tier_threshold(request)).answer(), status=201)


@routes.get("/admin/v1/accounts/{account_id}")
@described(
    admin_op(
        "An account's balances, tier and auto top-up",
        ok(ref("Account")),
        404,
        parameters=[ACCOUNT_ID],
    )
)
async def get_account(request: web.Request) -> web.Response:
    account = await request.app[SERVICES].accounts.get_account(request.match_info["account_id"])
    if account is None:
        raise ApiError(404, "no such account", "not_found")
    topup = await request.app[SERVICES].outbox.auto_topup(account.id)
    return json_response(account_view(account, tier_threshold(request), topup).answer())


@routes.post("/admin/v1/accounts/{account_id}/keys")
@described(
    admin_op(
        "Make an API key (or a management key) for the account",
        ok({"allOf": [ref("Key"), obj(["key"], key=STRING)]}, "Made: `key` is shown once"),
        404,
        *BODY_ERRORS,
        status="201",
        parameters=[ACCOUNT_ID],
        body=json_body(ref("NewKey"), required=False),
    )
)
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
    return json_response({"key": secret, **key_admin_view(key).answer()}, status=201)


@routes.patch("/admin/v1/keys/{key_hash}")
@described(
    admin_op(
        "Change a key: only the fields given",
        ok(ref("Key")),
        404,
        *BODY_ERRORS,
        parameters=[path("key_hash", "an API key's hash (sha256 of the secret, hex)")],
        body=json_body(ref("KeyChanges"), required=False),
    )
)
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
    return json_response(key_admin_view(key).answer())


@routes.get("/admin/v1/accounts/{account_id}/limits")
@described(
    admin_op("The account's rate-limit overrides", ok(ref("Limits")), 404, parameters=[ACCOUNT_ID])
)
async def get_limits(request: web.Request) -> web.Response:
    account_id = await existing_account(request)
    return json_response(await _limits_view(request, account_id))


@routes.put("/admin/v1/accounts/{account_id}/limits")
@described(
    admin_op(
        "Override rate limits by name",
        ok(ref("Limits")),
        404,
        *BODY_ERRORS,
        parameters=[ACCOUNT_ID],
        body=json_body(ref("LimitOverrides"), required=False),
    )
)
async def put_limits(request: web.Request) -> web.Response:
    """Override an account's limits by name: a count, "unlimited", or null to drop the override.

    `{"free-per-day": 5000, "free-per-minute": "unlimited"}`; limits not named keep their state.
    """
    account_id = await existing_account(request)
    names = [c.name for c in request.app[LIMITS].policy.limits]
    overrides = read_as(LimitOverrides, await json_object(request), limit_names=names)
    changes: dict[str, int | None] = dict(overrides.root)
    await request.app[SERVICES].limits.set_overrides(account_id, changes)
    await request.app[SERVICES].accounts.recall_leases(account_id)  # their slices of the windows
    return json_response(await _limits_view(request, account_id))


async def existing_account(request: web.Request) -> str:
    account = await request.app[SERVICES].accounts.get_account(request.match_info["account_id"])
    if account is None:
        raise ApiError(404, "no such account", "not_found")
    return account.id


async def _limits_view(request: web.Request, account_id: str) -> dict[str, Any]:
    overrides = await request.app[SERVICES].limits.overrides(account_id)
    return shapes.Limits(
        account_id=account_id,
        overrides={
            name: "unlimited" if value == UNLIMITED else value for name, value in overrides.items()
        },
        limits=[c.name for c in request.app[LIMITS].policy.limits],
    ).answer()
