"""The key holder's read APIs: models, credits, key, generation."""

from aiohttp import web

from gateway.api.answers import shapes
from gateway.api.answers.limit_view import rate_limit_states
from gateway.api.answers.model_view import model_view
from gateway.api.answers.views import generation_view, key_holder_view
from gateway.http.auth import authenticate
from gateway.http.describe import (
    API_KEY,
    KEY_ERRORS,
    OPEN,
    STRING,
    data_of,
    described,
    errors,
    ok,
    op,
    query,
    ref,
)
from gateway.http.errors import ApiError, json_response
from gateway.limits import LIMITS
from gateway.state import CLOCK, MODELS, SERVICES
from metering.accounts import Account, ApiKey
from metering.money import nanos_to_number
from metering.usage import account_of_generation
from ratelimit.policy import UNLIMITED

routes = web.RouteTableDef()


@routes.get("/api/v1/models")
@routes.get("/v1/models")
@described(
    op(
        "The catalog, with listed prices as decimal strings",
        "consumer",
        OPEN,
        {"200": ok(ref("ModelList"))},
    )
)
async def list_models(request: web.Request) -> web.Response:
    models = [model_view(m) for m in request.app[MODELS].values()]
    return json_response(shapes.ModelList(object="list", data=models).answer())


async def usable_key(request: web.Request) -> ApiKey:
    """The calling key, read fresh: a missing, disabled or expired key reads nothing."""
    services = request.app[SERVICES]
    now = request.app[CLOCK].now()
    account_id, key_hash = await authenticate(request, services.keys)
    key = await services.accounts.get_key(account_id, key_hash, now)
    if key is None:
        raise ApiError(401, "invalid API key", "invalid_api_key")
    if key.disabled:
        raise ApiError(401, "this API key is disabled", "invalid_api_key")
    if key.expires_at_ms is not None and key.expires_at_ms <= now * 1000:
        raise ApiError(401, "this API key has expired", "invalid_api_key")
    return key


async def management_key(request: web.Request, what: str) -> ApiKey:
    """The calling key, which must be a management key: an ordinary one gets a 403."""
    key = await usable_key(request)
    if not key.management:
        raise ApiError(403, f"{what} needs a management key", "forbidden")
    return key


async def holder(request: web.Request) -> tuple[ApiKey, Account]:
    """The calling key and its account."""
    key = await usable_key(request)
    account = await request.app[SERVICES].accounts.get_account(key.account_id)
    if account is None:
        raise ApiError(401, "invalid API key", "invalid_api_key")
    return key, account


@routes.get("/api/v1/credits")
@described(
    op(
        "Credits in and used, USD",
        "consumer",
        API_KEY,
        {"200": ok(data_of(ref("Credits"))), **errors(*KEY_ERRORS)},
    )
)
async def credits(request: web.Request) -> web.Response:
    _, account = await holder(request)
    answer = shapes.Credits(
        total_credits=nanos_to_number(account.balance + account.usage),
        total_usage=nanos_to_number(account.usage),
    )
    return json_response({"data": answer.answer()})


@routes.get("/api/v1/key")
@routes.get("/api/v1/auth/key")
@described(
    op(
        "The calling key: label, usage, limit, free-model requests left",
        "consumer",
        API_KEY,
        {"200": ok(data_of(ref("KeyHolder"))), **errors(*KEY_ERRORS)},
    )
)
async def current_key(request: web.Request) -> web.Response:
    key, account = await holder(request)
    policy = request.app[LIMITS].policy
    limits = await rate_limit_states(
        request.app[SERVICES].limits,
        policy,
        account.id,
        key.hash,
        account.purchased,
        request.app[CLOCK].now(),
    )
    daily = policy.free_daily()  # one of the limits just read: no second round trip
    free_daily = next(
        (_free_daily_view(s.used, s.limit) for s in limits if daily and s.name == daily.name),
        None,
    )
    return json_response({"data": key_holder_view(key, account, free_daily, limits).answer()})


async def free_daily_requests(
    request: web.Request, key: ApiKey, account: Account
) -> shapes.FreeModelDailyRequests | None:
    """Today's free-model requests of the key's account: its tier's limit, used and left."""
    daily = request.app[LIMITS].policy.free_daily()
    if daily is None:
        return None
    used, allowed = await request.app[SERVICES].limits.usage(
        account.id, key.hash, daily, account.purchased, request.app[CLOCK].now()
    )
    return _free_daily_view(used, None if allowed == UNLIMITED else allowed)


def _free_daily_view(used: int, limit: int | None) -> shapes.FreeModelDailyRequests:
    """`limit` None: unlimited by an operator's override."""
    return shapes.FreeModelDailyRequests(
        limit=limit, remaining=None if limit is None else max(limit - used, 0), used=used
    )


@routes.get("/api/v1/generation")
@described(
    op(
        "One usage record of the caller's account",
        "consumer",
        API_KEY,
        {"200": ok(data_of(ref("Generation"))), **errors(400, 404, *KEY_ERRORS)},
        parameters=[query("id", STRING, "a generation id", required=True)],
    )
)
async def generation(request: web.Request) -> web.Response:
    _, account = await holder(request)
    generation_id = request.query.get("id", "")
    if not generation_id:
        raise ApiError(400, "the 'id' query parameter is required", "bad_request", field="id")
    not_found = ApiError(
        404, f"no generation {generation_id[:100]!r} for this account", "not_found"
    )
    if account_of_generation(generation_id) != account.id:
        raise not_found
    record = await request.app[SERVICES].metering.generation(account.id, generation_id)
    if record is None:
        raise not_found
    return json_response({"data": generation_view(record).answer()})
