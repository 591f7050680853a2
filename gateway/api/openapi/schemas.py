"""The `components` of the OpenAPI document (see gateway.api.openapi.document): the shapes of what
the gateway answers and takes, the error format of billing-rules.md, and the security schemes.

The answers' shapes and the admin and key APIs' bodies come from their typed models
(gateway.api.answers.shapes, built by the views; gateway.api.bodies, read by the handlers); the
rest is written here. tests/api/test_openapi.py runs schemathesis against a live gateway to keep the
document true.
"""

from typing import Any, Literal

from pydantic import BaseModel

from gateway.api import bodies
from gateway.api.answers import shapes
from gateway.api.openapi.api_schemas import API_SCHEMAS, anthropic_responses
from gateway.billing.shapes import BILLING_ANSWERS
from gateway.http.describe import COUNT, Schema, obj, ref

USD = {
    "type": "string",
    "pattern": r"^-?[0-9]+\.[0-9]{2,9}$",
    "description": "US dollars as an exact decimal string",
    "examples": ["10.00", "0.00001035"],
}


def model_schemas(
    models: "tuple[type[BaseModel], ...]", mode: Literal["validation", "serialization"]
) -> dict[str, Schema]:
    """The schemas of typed bodies (gateway.api.bodies) or answers (gateway.api.answers.shapes), the
    models they hold included: each under its class name."""
    found: dict[str, Schema] = {}
    for model in models:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}", mode=mode)
        found.update(schema.pop("$defs", {}))
        found[model.__name__] = schema
    return found


ERROR = obj(
    ["error"],
    error=obj(
        ["code", "message", "metadata"],
        code={"type": "integer", "minimum": 400, "maximum": 599},
        message={"type": "string"},
        metadata=obj(
            ["error_type"],
            error_type={
                "type": "string",
                "description": "machine-readable: payment_required, rate_limit_exceeded, "
                "invalid_api_key, bad_request, not_found, ...",
            },
            field={"type": "string", "description": "the request field at fault (400s)"},
        ),
    ),
)

USAGE = obj(
    ["prompt_tokens", "completion_tokens", "total_tokens", "cost"],
    prompt_tokens=COUNT,
    completion_tokens=COUNT,
    total_tokens=COUNT,
    cost={"type": "number", "description": "USD charged"},
)

COMPLETION = obj(
    ["id", "model", "usage"],
    id={"type": "string", "description": "the generation id (also X-Generation-Id)"},
    model={"type": "string", "description": "the catalog id the client sent"},
    provider={"type": "string"},
    choices={"type": "array"},
    usage=USAGE,
)

_TOKENS = {"type": ["integer", "null"], "minimum": 1}
_CHOICES = {"type": ["integer", "null"], "minimum": 1, "maximum": 16}
_SAMPLING = {
    name: {"type": ["number", "null"]}
    for name in ("temperature", "top_p", "presence_penalty", "frequency_penalty")
}
_COMPLETION_COMMON = {
    "model": {"type": "string", "minLength": 1, "description": "a catalog id, see /api/v1/models"},
    "stream": {"type": ["boolean", "null"]},
    "stream_options": {"type": ["object", "null"]},
    "max_tokens": _TOKENS,
    "max_completion_tokens": _TOKENS,
    "n": _CHOICES,
    **_SAMPLING,
}
CHAT_REQUEST = {
    "type": "object",
    "required": ["model", "messages"],
    "description": "OpenAI chat completions; fields not listed pass through to the provider",
    "properties": {
        **_COMPLETION_COMMON,
        "messages": {
            "type": "array",
            "minItems": 1,
            "items": obj(
                ["role"],
                role={"type": "string"},
                content={"type": ["string", "array", "null"]},
            ),
        },
    },
}
PROMPT_ITEM = {"type": ["string", "integer", "array"]}
TEXT_REQUEST = {
    "type": "object",
    "required": ["model", "prompt"],
    "description": "OpenAI (legacy) completions; fields not listed pass through to the provider",
    "properties": {
        **_COMPLETION_COMMON,
        "best_of": _CHOICES,
        "prompt": {
            "oneOf": [{"type": "string"}, {"type": "array", "minItems": 1, "items": PROMPT_ITEM}]
        },
    },
}

EMBEDDING_REQUEST = {
    "type": "object",
    "required": ["model", "input"],
    "description": "OpenAI embeddings; fields not listed pass through to the provider",
    "properties": {
        "model": {"type": "string", "minLength": 1, "description": "a catalog id"},
        "input": {
            "oneOf": [
                {"type": "string", "minLength": 1},
                {"type": "array", "minItems": 1, "items": {"type": "string"}},
                {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 0}},
                {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "array",
                        "minItems": 1,
                        "items": {"type": "integer", "minimum": 0},
                    },
                },
            ]
        },
        "encoding_format": {"enum": ["float", "base64"]},
        "dimensions": {"type": "integer", "minimum": 1},
        "stream": {"const": False},
    },
}
EMBEDDINGS = obj(
    ["data", "model", "usage"],
    object={"const": "list"},
    data={"type": "array"},
    model={"type": "string", "description": "the catalog id that served"},
    usage=obj(
        ["prompt_tokens", "total_tokens", "cost"],
        prompt_tokens=COUNT,
        total_tokens=COUNT,
        cost={"type": "number", "description": "USD charged"},
    ),
)

SCHEMAS: dict[str, Schema] = {
    "Error": ERROR,
    "Usd": USD,
    **model_schemas(shapes.ANSWERS, "serialization"),
    **model_schemas(BILLING_ANSWERS, "serialization"),
    "Completion": COMPLETION,
    "ChatCompletionRequest": CHAT_REQUEST,
    "CompletionRequest": TEXT_REQUEST,
    "EmbeddingRequest": EMBEDDING_REQUEST,
    "Embeddings": EMBEDDINGS,
    **API_SCHEMAS,
    **model_schemas(bodies.BODIES, "validation"),
}

_ERRORS = {
    400: "Bad request: the message and `metadata.field` say what is wrong",
    401: "Missing, unknown, disabled or expired credentials",
    402: "Not enough credits, or the key's credit limit reached",
    403: "Forbidden for this credential (or the admin API is off)",
    404: "No such record, model or account",
    408: "The provider timed out before any output",
    409: "Conflict: the message and `metadata` say why",
    413: "Request body too large",
    429: "Rate limited: the message says which limit and how to lift it",
    502: "The provider failed or sent garbage (not charged)",
    503: "The store or the provider is unavailable; try again shortly",
}
_RETRY_AFTER = {"description": "seconds to wait", "schema": {"type": "string"}}
_RATE_HEADERS = {
    name: {"description": description, "schema": {"type": "string"}}
    for name, description in (
        ("X-RateLimit-Limit", "requests the limit allows in its window"),
        ("X-RateLimit-Remaining", "requests left in the window"),
        ("X-RateLimit-Reset", "end of the window, epoch milliseconds"),
    )
}


def _error_response(status: int) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": _ERRORS[status],
        "content": {"application/json": {"schema": ref("Error")}},
    }
    if status == 429:
        response["headers"] = {"Retry-After": {**_RETRY_AFTER, "required": True}, **_RATE_HEADERS}
    return response


_OPENROUTER_ERRORS = {str(status): _error_response(status) for status in _ERRORS}
RESPONSES = {**_OPENROUTER_ERRORS, **anthropic_responses(_OPENROUTER_ERRORS)}

SECURITY_SCHEMES = {
    "apiKey": {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key of an account (`sk-gw-v1-...`), from the admin API",
    },
    "managementKey": {
        "type": "http",
        "scheme": "bearer",
        "description": "A management key: an API key made with `management: true` by the "
        "operator; it manages its account's keys and cannot call models",
    },
    "adminToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "GATEWAY_ADMIN_TOKEN (the admin API is off, 403, without it)",
    },
    "metricsToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "`metrics_token`, when set; /metrics is open otherwise",
    },
}
