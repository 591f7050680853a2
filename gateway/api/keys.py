"""Management keys: an account's own keys that manage its other keys (never call models).

`GET/POST /api/v1/keys`, `GET/PATCH/DELETE /api/v1/keys/{hash}`, for the calling key's account
only; an ordinary key gets 403 here, and a management key gets 403 on model calls. A management
key cannot make another management key: only the operator can.
"""

from aiohttp import web

from gateway.api.answers import shapes
from gateway.api.answers.views import key_admin_view
from gateway.api.bodies import KeyChanges, NewKey, read_as
from gateway.api.consumer import management_key
from gateway.api.key_input import key_changes, new_key_fields
from gateway.http.describe import (
    BODY_ERRORS,
    INTEGER,
    MANAGEMENT_KEY,
    MANAGER_ERRORS,
    data_of,
    described,
    errors,
    json_body,
    ok,
    op,
    path,
    query,
    ref,
)
from gateway.http.errors import ApiError, bad_request, json_response
from gateway.http.json_input import json_object
from gateway.state import CLOCK, SERVICES, SETTINGS
from metering.accounts import ApiKey

routes = web.RouteTableDef()
MAX_PAGE = 100


async def _own_key(request: web.Request, manager: ApiKey) -> ApiKey:
    key_hash = request.match_info["key_hash"]
    key = await request.app[SERVICES].accounts.get_key(
        manager.account_id, key_hash, request.app[CLOCK].now()
    )
    if key is None:
        raise ApiError(404, "no such key in this account", "not_found")
    return key


KEY_HASH = path("key_hash", "an API key's hash (sha256 of the secret, hex)")


@routes.get("/api/v1/keys")
@described(
    op(
        "The account's keys",
        "keys",
        MANAGEMENT_KEY,
        {"200": ok(ref("KeyPage")), **errors(400, *MANAGER_ERRORS)},
        parameters=[
            query("offset", INTEGER, "keys to skip"),
            query("limit", INTEGER, "page size (1 to 100)"),
        ],
    )
)
async def list_keys(request: web.Request) -> web.Response:
    manager = await management_key(request, "managing keys")
    try:
        offset = min(max(int(request.query.get("offset", "0")), 0), 10**9)
        limit = min(max(int(request.query.get("limit", str(MAX_PAGE))), 1), MAX_PAGE)
    except ValueError:
        raise bad_request("'offset' and 'limit' must be whole numbers", "offset") from None
    keys = await request.app[SERVICES].accounts.list_keys(
        manager.account_id, request.app[CLOCK].now()
    )
    page = keys[offset : offset + limit]
    views = [key_admin_view(k) for k in page]
    return json_response(shapes.KeyPage(data=views, offset=offset, total=len(keys)).answer())


@routes.post("/api/v1/keys")
@described(
    op(
        "Make a key (never a management key)",
        "keys",
        MANAGEMENT_KEY,
        {
            "201": ok(ref("MadeKey"), "Made: `key` is the secret, shown once"),
            **errors(*BODY_ERRORS, *MANAGER_ERRORS),
        },
        body=json_body(ref("NewKey"), required=False),
    )
)
async def create_key(request: web.Request) -> web.Response:
    manager = await management_key(request, "managing keys")
    now = request.app[CLOCK].now()
    body = read_as(
        NewKey, await json_object(request), max_usd=request.app[SETTINGS].max_purchase, now=now
    )
    if body.management:
        raise ApiError(403, "only the operator can create management keys", "forbidden")
    fields = new_key_fields(body)
    secret, key = await request.app[SERVICES].accounts.create_key(
        manager.account_id, now=now, **fields
    )
    made = shapes.MadeKey(key=secret, data=key_admin_view(key))
    return json_response(made.answer(), status=201)


@routes.get("/api/v1/keys/{key_hash}")
@described(
    op(
        "One key of the account",
        "keys",
        MANAGEMENT_KEY,
        {"200": ok(data_of(ref("Key"))), **errors(404, *MANAGER_ERRORS)},
        parameters=[KEY_HASH],
    )
)
async def get_key(request: web.Request) -> web.Response:
    key = await _own_key(request, await management_key(request, "managing keys"))
    return json_response({"data": key_admin_view(key).answer()})


@routes.patch("/api/v1/keys/{key_hash}")
@described(
    op(
        "Change a key: only the fields given",
        "keys",
        MANAGEMENT_KEY,
        {"200": ok(data_of(ref("Key"))), **errors(404, *BODY_ERRORS, *MANAGER_ERRORS)},
        parameters=[KEY_HASH],
        body=json_body(ref("KeyChanges"), required=False),
    )
)
async def update_key(request: web.Request) -> web.Response:
    key = await _own_key(request, await management_key(request, "managing keys"))
    changes = key_changes(
        read_as(
            KeyChanges,
            await json_object(request),
            max_usd=request.app[SETTINGS].max_purchase,
            now=request.app[CLOCK].now(),
        )
    )
    updated = await request.app[SERVICES].accounts.update_key(
        key.hash, request.app[CLOCK].now(), **changes
    )
    if updated is None:
        raise ApiError(404, "no such key in this account", "not_found")
    return json_response({"data": key_admin_view(updated).answer()})


@routes.delete("/api/v1/keys/{key_hash}")
@described(
    op(
        "Delete a key",
        "keys",
        MANAGEMENT_KEY,
        {"200": ok(data_of(ref("DeletedKey"))), **errors(404, *MANAGER_ERRORS)},
        parameters=[KEY_HASH],
    )
)
async def delete_key(request: web.Request) -> web.Response:
    key = await _own_key(request, await management_key(request, "managing keys"))
    services = request.app[SERVICES]
    await services.accounts.delete_key(key.account_id, key.hash)
    services.keys.forget(key.hash)
    return json_response({"data": shapes.DeletedKey(hash=key.hash, deleted=True).answer()})
