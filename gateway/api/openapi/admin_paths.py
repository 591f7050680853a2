"""The operator's admin API in the OpenAPI document (see gateway.api.openapi.document): accounts,
keys, purchases, refunds, the ledger, limits and Activity over every account, behind the admin
token."""

from typing import Any

from gateway.api.openapi.paths import (
    ACCOUNT_ID,
    BODY_ERRORS,
    CURSOR,
    FILTERS,
    GROUPS,
    INTEGER,
    KEY_HASH,
    STRING,
    Security,
    errors,
    json_body,
    ok,
    op,
    path,
    query,
)
from gateway.api.openapi.schemas import (
    COUNT,
    TIME,
    data_of,
    list_of,
    obj,
    ref,
)

ADMIN: Security = [{"adminToken": []}]
ADMIN_ERRORS = (401, 403, 503)


def admin(
    summary: str,
    answer: dict[str, Any],
    *extra: int,
    status: str = "200",
    more: dict[str, Any] | None = None,
    **kw: Any,
) -> dict[str, Any]:
    responses = {status: answer, **(more or {}), **errors(*extra, *ADMIN_ERRORS)}
    return op(summary, "admin", ADMIN, responses, **kw)


OVERRIDES = {
    "type": "object",
    "description": 'limit name -> a count, "unlimited", or null to drop the override',
    "additionalProperties": {
        "oneOf": [
            {"type": "integer", "minimum": 0, "maximum": 1_000_000_000},
            {"const": "unlimited"},
            {"type": "null"},
        ]
    },
}
REFUND = obj(
    ["purchase_id", "refunded", "fee_refunded", "fee_kept"],
    purchase_id=STRING,
    refunded=ref("Usd"),
    fee_refunded=ref("Usd"),
    fee_kept=ref("Usd"),
    created_at=TIME,
)
LEDGER_PAGE = obj(
    ["data", "next_cursor"],
    data=list_of(ref("LedgerEntry")),
    next_cursor={"type": ["string", "null"]},
)
ADMIN_ACTIVITY = data_of(
    obj(
        ["accounts", "buckets", "totals"],
        accounts=COUNT,
        buckets=list_of(ref("Bucket")),
        totals=ref("Totals"),
    )
)
ADMIN_PATHS = {
    "/admin/v1/accounts": {
        "post": admin(
            "Open an account",
            ok(ref("Account"), "Opened"),
            *BODY_ERRORS,
            status="201",
            body=json_body(ref("NewAccount"), required=False),
        )
    },
    "/admin/v1/accounts/{account_id}": {
        "parameters": [ACCOUNT_ID],
        "get": admin("An account's balances, tier and auto top-up", ok(ref("Account")), 404),
    },
    "/admin/v1/accounts/{account_id}/auto-topup": {
        "parameters": [ACCOUNT_ID],
        "put": admin(
            "Turn auto top-up on (threshold and amount) or off (null)",
            ok(ref("Account")),
            404,
            409,
            *BODY_ERRORS,
            body=json_body({"oneOf": [{"type": "null"}, ref("AutoTopupSettings")]}, required=False),
        ),
    },
    "/admin/v1/accounts/{account_id}/keys": {
        "parameters": [ACCOUNT_ID],
        "post": admin(
            "Make an API key (or a management key) for the account",
            ok({"allOf": [ref("Key"), obj(["key"], key=STRING)]}, "Made: `key` is shown once"),
            404,
            *BODY_ERRORS,
            status="201",
            body=json_body(ref("NewKey"), required=False),
        ),
    },
    "/admin/v1/keys/{key_hash}": {
        "parameters": [KEY_HASH],
        "patch": admin(
            "Change a key: only the fields given",
            ok(ref("Key")),
            404,
            *BODY_ERRORS,
            body=json_body(ref("KeyChanges"), required=False),
        ),
    },
    "/admin/v1/accounts/{account_id}/purchases": {
        "parameters": [ACCOUNT_ID],
        "post": admin(
            "Credit a purchase (the fee is on top); idempotent on idempotency_key",
            ok(ref("Purchase"), "Credited"),
            404,
            409,
            *BODY_ERRORS,
            status="201",
            body=json_body(ref("NewPurchase")),
            more={"200": ok(ref("Purchase"), "The same idempotency key again: the first purchase")},
        ),
    },
    "/admin/v1/accounts/{account_id}/limits": {
        "parameters": [ACCOUNT_ID],
        "get": admin("The account's rate-limit overrides", ok(ref("Limits")), 404),
        "put": admin(
            "Override rate limits by name",
            ok(ref("Limits")),
            404,
            *BODY_ERRORS,
            body=json_body(OVERRIDES, required=False),
        ),
    },
    "/admin/v1/purchases/{purchase_id}/refund": {
        "parameters": [path("purchase_id", "a purchase id")],
        "post": admin("Refund what is unused of a purchase", ok(REFUND), 404, 409),
    },
    "/admin/v1/accounts/{account_id}/ledger": {
        "parameters": [ACCOUNT_ID],
        "get": admin(
            "Every movement of credit, newest first",
            ok(LEDGER_PAGE),
            400,
            404,
            parameters=[CURSOR, query("limit", INTEGER, "page size (1 to 1000, 100)")],
        ),
    },
    "/admin/v1/activity": {
        "get": admin(
            "Activity of one account, or of every account added up",
            ok(ADMIN_ACTIVITY),
            400,
            404,
            parameters=[
                query("account", STRING, "one account (default: all, up to 10,000)"),
                *FILTERS,
                query("group_by", {"enum": [*GROUPS, "account"]}, "split the rows by this"),
            ],
        ),
    },
}
