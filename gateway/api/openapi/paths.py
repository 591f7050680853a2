"""The `paths` of the OpenAPI document (see gateway.api.openapi.document): one entry per route of
the app, with its credential, parameters, body, answer and the errors it may give. The admin
API's are in gateway.api.openapi.admin_paths; the helpers here serve both."""

from typing import Any

from gateway.api.openapi.schemas import (
    CENTS_INPUT,
    COUNT,
    TIME,
    Schema,
    data_of,
    list_of,
    obj,
    ref,
)

Security = list[dict[str, list[str]]]
API_KEY: Security = [{"apiKey": []}]
MANAGEMENT_KEY: Security = [{"managementKey": []}]
OPEN: Security = []
METRICS: Security = [{}, {"metricsToken": []}]

# The errors every call with that credential may get (the key-guessing guard may answer 429
# before a key is looked up; the store may be away, 503).
KEY_ERRORS = (401, 429, 503)
MANAGER_ERRORS = (401, 403, 429, 503)
BODY_ERRORS = (400, 413)
STRING: Schema = {"type": "string"}
INTEGER: Schema = {"type": "integer"}


def op(
    summary: str,
    tag: str,
    security: Security,
    responses: dict[str, Any],
    *,
    parameters: list[Any] | None = None,
    body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "tags": [tag],
        "security": security,
        "responses": responses,
    }
    if parameters:
        operation["parameters"] = parameters
    if body is not None:
        operation["requestBody"] = body
    return operation


def json_body(schema: Schema, *, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": schema}}}


def ok(schema: Schema, description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def text(media_type: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {media_type: {"schema": STRING}}}


def errors(*statuses: int) -> dict[str, Any]:
    return {str(s): {"$ref": f"#/components/responses/{s}"} for s in sorted(set(statuses))}


def query(name: str, schema: Schema, description: str, *, required: bool = False) -> Any:
    return {"name": name, "in": "query", "required": required, "description": description} | {
        "schema": schema
    }


def path(name: str, description: str) -> Any:
    return {"name": name, "in": "path", "required": True, "description": description} | {
        "schema": STRING
    }


FILTERS = [
    query("model", STRING, "only this model (catalog id)"),
    query("provider", STRING, "only this provider"),
    query("key", STRING, "only this API key (its hash)"),
    query("from", TIME, "start, RFC 3339 with a zone, 1970 to 9999-01-01 (default: a span back)"),
    query("to", TIME, "end, RFC 3339 with a zone, 1970 to 9999-01-01 (default: now)"),
    query("granularity", {"enum": ["minute", "hour", "day", "month"]}, "bucket size (day)"),
]
GROUPS = ["none", "model", "provider", "key"]
GROUP_BY = query("group_by", {"enum": GROUPS}, "split the rows by this")
CURSOR = query("cursor", STRING, "the `next_cursor` of the previous page (another is a 400)")
ACCOUNT_ID = path("account_id", "an account id")
KEY_HASH = path("key_hash", "an API key's hash (sha256 of the secret, hex)")

# --- completions -------------------------------------------------------------------------------

SSE_EVENT = obj(
    ["data"],
    data={
        "type": "string",
        "description": "a JSON completion chunk (the last before `[DONE]` carries `usage`; an "
        'error after the stream started is a chunk with `finish_reason: "error"` and an '
        "`error` member), then `[DONE]`",
    },
    event=STRING,
    id=STRING,
)
COMPLETION_OK = {
    "description": "The answer, with `usage.cost`; a stream (`stream: true`) is SSE whose last "
    "chunk before `data: [DONE]` carries the usage",
    "headers": {
        "X-Generation-Id": {"description": "the generation id", "required": True, "schema": STRING}
    },
    "content": {
        "application/json": {"schema": ref("Completion")},
        "text/event-stream": {"schema": SSE_EVENT},
    },
}
COMPLETION_ERRORS = {
    **errors(400, 401, 402, 403, 404, 408, 413, 429, 502, 503),
    "4XX": {
        "description": "The provider's own refusal of the request (such as a context that is too "
        "long), passed on with its status",
        "content": {"application/json": {"schema": ref("Error")}},
    },
}


def completion(summary: str, schema: str) -> dict[str, Any]:
    return {
        "post": op(
            summary,
            "completions",
            API_KEY,
            {"200": COMPLETION_OK, **COMPLETION_ERRORS},
            body=json_body(ref(schema)),
        )
    }


# --- the key holder's read APIs and Activity ---------------------------------------------------

MODELS = {
    "get": op(
        "The catalog, with listed prices as decimal strings",
        "consumer",
        OPEN,
        {"200": ok(obj(["object", "data"], object={"const": "list"}, data=list_of(ref("Model"))))},
    )
}
KEY_VIEW = {
    "get": op(
        "The calling key: label, usage, limit, free-model requests left",
        "consumer",
        API_KEY,
        {"200": ok(data_of(ref("KeyHolder"))), **errors(*KEY_ERRORS)},
    )
}
CREDITS = obj(
    ["total_credits", "total_usage"],
    total_credits={"type": "number"},
    total_usage={"type": "number"},
)
ACTIVITY = data_of(obj(["buckets", "totals"], buckets=list_of(ref("Bucket")), totals=ref("Totals")))
GENERATIONS_PAGE = obj(
    ["data", "next_cursor"],
    data=list_of(ref("Generation")),
    next_cursor={"type": ["string", "null"]},
)
CSV = text("text/csv", "RFC 4180 rows, a header line first, UTC times")


def key_get(summary: str, tag: str, answer: dict[str, Any], *extra: int, **kw: Any) -> Any:
    return {"get": op(summary, tag, API_KEY, {"200": answer, **errors(*extra, *KEY_ERRORS)}, **kw)}


CONSUMER_PATHS = {
    "/api/v1/chat/completions": completion("Chat completions", "ChatCompletionRequest"),
    "/v1/chat/completions": completion("Chat completions (alias)", "ChatCompletionRequest"),
    "/api/v1/completions": completion("Text completions", "CompletionRequest"),
    "/v1/completions": completion("Text completions (alias)", "CompletionRequest"),
    "/api/v1/models": MODELS,
    "/v1/models": MODELS,
    "/api/v1/credits": key_get("Credits in and used, USD", "consumer", ok(data_of(CREDITS))),
    "/api/v1/key": KEY_VIEW,
    "/api/v1/auth/key": KEY_VIEW,
    "/api/v1/generation": key_get(
        "One usage record of the caller's account",
        "consumer",
        ok(data_of(ref("Generation"))),
        400,
        404,
        parameters=[query("id", STRING, "a generation id", required=True)],
    ),
    "/api/v1/activity": key_get(
        "Spend, tokens and requests over time",
        "activity",
        ok(ACTIVITY),
        400,
        parameters=[*FILTERS, GROUP_BY],
    ),
    "/api/v1/activity.csv": key_get(
        "The activity rows as CSV", "activity", CSV, 400, parameters=[*FILTERS, GROUP_BY]
    ),
    "/api/v1/generations": key_get(
        "Usage records, newest first",
        "activity",
        ok(GENERATIONS_PAGE),
        400,
        parameters=[*FILTERS, CURSOR, query("limit", INTEGER, "page size (1 to 500, 50)")],
    ),
    "/api/v1/generations.csv": key_get(
        "Usage records as CSV", "activity", CSV, 400, parameters=FILTERS
    ),
}

# --- management keys ---------------------------------------------------------------------------

KEY_PAGE = obj(["data", "offset", "total"], data=list_of(ref("Key")), offset=COUNT, total=COUNT)
MADE_KEY = obj(["key", "data"], key=STRING, data=ref("Key"))
DELETED = data_of(obj(["hash", "deleted"], hash=STRING, deleted={"const": True}))
KEYS_PATHS = {
    "/api/v1/keys": {
        "get": op(
            "The account's keys",
            "keys",
            MANAGEMENT_KEY,
            {"200": ok(KEY_PAGE), **errors(400, *MANAGER_ERRORS)},
            parameters=[
                query("offset", INTEGER, "keys to skip"),
                query("limit", INTEGER, "page size (1 to 100)"),
            ],
        ),
        "post": op(
            "Make a key (never a management key)",
            "keys",
            MANAGEMENT_KEY,
            {
                "201": ok(MADE_KEY, "Made: `key` is the secret, shown once"),
                **errors(*BODY_ERRORS, *MANAGER_ERRORS),
            },
            body=json_body(ref("NewKey"), required=False),
        ),
    },
    "/api/v1/keys/{key_hash}": {
        "parameters": [KEY_HASH],
        "get": op(
            "One key of the account",
            "keys",
            MANAGEMENT_KEY,
            {"200": ok(data_of(ref("Key"))), **errors(404, *MANAGER_ERRORS)},
        ),
        "patch": op(
            "Change a key: only the fields given",
            "keys",
            MANAGEMENT_KEY,
            {"200": ok(data_of(ref("Key"))), **errors(404, *BODY_ERRORS, *MANAGER_ERRORS)},
            body=json_body(ref("KeyChanges"), required=False),
        ),
        "delete": op(
            "Delete a key",
            "keys",
            MANAGEMENT_KEY,
            {"200": ok(DELETED), **errors(404, *MANAGER_ERRORS)},
        ),
    },
}

# --- webhooks, the Activity page, operations ---------------------------------------------------

PAYMENT_EVENT = obj(
    ["id", "type", "data"],
    id={"type": "string", "minLength": 1, "maxLength": 200},
    type={"enum": ["payment.succeeded", "payment.refunded", "payment.failed"]},
    data=obj(
        ["account_id"],
        account_id={"type": "string", "minLength": 1, "maxLength": 64},
        payment_id={"type": "string", "minLength": 1, "maxLength": 200},
        amount=CENTS_INPUT,
        method={"enum": ["card", "alipay", "crypto"]},
        topup_id=STRING,
    ),
)
RECEIVED = obj(
    ["received"],
    received={"const": True},
    duplicate={"type": "boolean"},
    purchase=ref("Purchase"),
    purchase_id=STRING,
    refunded=ref("Usd"),
    topup_cleared={"type": "boolean"},
)
SIGNATURE = {
    "name": "Gateway-Signature",
    "in": "header",
    "required": True,
    "description": "t=<unix seconds>,v1=<hex HMAC-SHA256 of `<t>.<raw body>`>",
    "schema": STRING,
}
HEALTH = obj(["status", "pid"], status={"const": "ok"}, pid=INTEGER)
READY = obj(
    ["status", "models", "limits"],
    status={"const": "ready"},
    models=COUNT,
    limits=list_of(STRING),
    scripts_loaded_now={"type": "integer", "description": "scripts this check had to load"},
    journal_pending=COUNT,
)
OPERATOR_PATHS = {
    "/webhooks/payments": {
        "post": op(
            "Payment notifications, signed (payment.succeeded, .refunded, .failed)",
            "webhooks",
            OPEN,
            {"200": ok(RECEIVED, "Received"), **errors(400, 401, 404, 409, 413, 503)},
            parameters=[SIGNATURE],
            body=json_body(PAYMENT_EVENT),
        )
    },
    "/activity": {
        "get": op(
            "The Activity page (it asks for the key itself)",
            "activity",
            OPEN,
            {"200": text("text/html", "The page")},
        )
    },
    "/activity/{name}": {
        "parameters": [path("name", "activity.js or activity.css")],
        "get": op(
            "The Activity page's script and style",
            "activity",
            OPEN,
            {
                "200": {
                    "description": "The file",
                    "content": {
                        "text/javascript": {"schema": STRING},
                        "text/css": {"schema": STRING},
                    },
                },
                **errors(404),
            },
        ),
    },
    "/healthz": {"get": op("The process answers", "operations", OPEN, {"200": ok(HEALTH)})},
    "/readyz": {
        "get": op(
            "Redis reachable, catalog and rate limits loaded",
            "operations",
            OPEN,
            {"200": ok(READY), **errors(503)},
        )
    },
    "/metrics": {
        "get": op(
            "Prometheus metrics, summed over workers",
            "operations",
            METRICS,
            {"200": text("text/plain", "Prometheus text format"), **errors(401)},
        )
    },
    "/openapi.json": {
        "get": op(
            "This document",
            "operations",
            OPEN,
            {"200": ok({"type": "object", "required": ["openapi", "paths"]})},
        )
    },
}
