"""The schemas of the Responses and Messages APIs (gateway.proxy.apis): what the gateway checks
in their bodies, what it adds to their answers (`usage.cost`), and Anthropic's error shape. The
rest of each body and answer is the provider's, passed through, so the schemas stay open."""

from typing import Any

from gateway.http.describe import COUNT, STRING, Schema, obj

_MODEL = {"type": "string", "minLength": 1, "description": "a catalog id"}
_COST = {"type": "number", "description": "USD charged"}
_OPEN_OBJECT = {"type": "object"}

RESPONSE_REQUEST = {
    "type": "object",
    "required": ["model"],
    "description": "OpenAI's Responses API; `input` (or a stored `prompt`) is required; fields "
    "not listed pass through (`previous_response_id`, `store`, `tools`, `reasoning`...)",
    "properties": {
        "model": _MODEL,
        "input": {"oneOf": [{"type": "string"}, {"type": "array", "items": _OPEN_OBJECT}]},
        "instructions": {"type": ["string", "null"]},
        "stream": {"type": ["boolean", "null"]},
        "max_output_tokens": {"type": ["integer", "null"], "minimum": 1},
        "temperature": {"type": ["number", "null"], "minimum": 0, "maximum": 2},
        "top_p": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
        "previous_response_id": {"type": ["string", "null"]},
        "store": {"type": ["boolean", "null"]},
        "background": {"enum": [False, None], "description": "not supported (see README)"},
    },
}
RESPONSE = obj(
    ["id", "object", "model", "output", "usage"],
    id={"type": "string", "description": "the provider's response id (its state)"},
    object={"const": "response"},
    status=STRING,
    model={"type": "string", "description": "the catalog id that served"},
    output={"type": "array"},
    usage=obj(
        ["input_tokens", "output_tokens", "total_tokens", "cost"],
        input_tokens=COUNT,
        output_tokens=COUNT,
        total_tokens=COUNT,
        input_tokens_details=_OPEN_OBJECT,
        output_tokens_details=_OPEN_OBJECT,
        cost=_COST,
    ),
)
RESPONSE_EVENT = obj(
    ["data"],
    event={"type": "string", "description": "the event's type, e.g. response.output_text.delta"},
    data={
        "type": "string",
        "description": "a JSON event; the last (`response.completed`, `response.incomplete` "
        "or `response.failed`) has `response.usage` with `cost`",
    },
)
MESSAGE_REQUEST = {
    "type": "object",
    "required": ["model", "messages", "max_tokens"],
    "description": "Anthropic's Messages API; fields not listed pass through (`tools`, "
    "`thinking`, `metadata`...)",
    "properties": {
        "model": _MODEL,
        "messages": {
            "type": "array",
            "minItems": 1,
            "items": obj(
                ["role", "content"],
                role={"enum": ["user", "assistant"]},
                content={"type": ["string", "array"]},
            ),
        },
        "system": {"type": ["string", "array"]},
        "max_tokens": {"type": "integer", "minimum": 1},
        "stream": {"type": ["boolean", "null"]},
        "temperature": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
        "top_p": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
        "top_k": {"type": ["integer", "null"], "minimum": 0},
        "stop_sequences": {"type": ["array", "null"], "items": STRING},
    },
}
MESSAGE = obj(
    ["id", "type", "role", "content", "model", "usage"],
    id={"type": "string", "description": "the generation id"},
    type={"const": "message"},
    role={"const": "assistant"},
    content={"type": "array"},
    model={"type": "string", "description": "the catalog id that served"},
    stop_reason={"type": ["string", "null"]},
    usage=obj(
        ["input_tokens", "output_tokens", "cost"],
        input_tokens=COUNT,
        output_tokens=COUNT,
        cache_creation_input_tokens={"type": ["integer", "null"], "minimum": 0},
        cache_read_input_tokens={"type": ["integer", "null"], "minimum": 0},
        cost=_COST,
    ),
)
MESSAGE_EVENT = obj(
    ["data"],
    event={"type": "string", "description": "message_start, content_block_delta, ..."},
    data={
        "type": "string",
        "description": "a JSON event; `message_delta` has `usage` with `cost`",
    },
)
ANTHROPIC_ERROR = obj(
    ["type", "error"],
    type={"const": "error"},
    error=obj(
        ["type", "message"],
        type={
            "type": "string",
            "description": "invalid_request_error, authentication_error, billing_error, "
            "permission_error, not_found_error, request_too_large, rate_limit_error, "
            "timeout_error, api_error",
        },
        message=STRING,
    ),
)
API_SCHEMAS: dict[str, Schema] = {
    "ResponseRequest": RESPONSE_REQUEST,
    "Response": RESPONSE,
    "ResponseStreamEvent": RESPONSE_EVENT,
    "MessageRequest": MESSAGE_REQUEST,
    "Message": MESSAGE,
    "MessageStreamEvent": MESSAGE_EVENT,
    "AnthropicError": ANTHROPIC_ERROR,
}


def anthropic_responses(errors: dict[str, Any]) -> dict[str, Any]:
    """Error answers (components/responses) as Anthropic-shaped ones, for the Messages API."""
    shaped = {"application/json": {"schema": {"$ref": "#/components/schemas/AnthropicError"}}}
    return {
        f"anthropic-{status}": {**answer, "content": shaped} for status, answer in errors.items()
    }
