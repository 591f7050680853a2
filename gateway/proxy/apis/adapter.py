"""What an API adapter knows, and nothing more: the pipeline (gateway.proxy.pipeline) does the rest.

An adapter knows its request's fields (the worst case the reservation covers: the input's bound
and its output cap), the provider's path and the output cap it is sent, where the usage is in the
provider's answer and in which stream event, and how `cost` goes into the answer. Admission,
settlement, the journal, limits, records, Activity and metrics are shared. Adding an API is one
module beside chat.py (embeddings.py is the smallest) with its routes and its tests.
"""

from typing import Any, Literal

from aiohttp import web

from gateway.http.describe import API_KEY, STRING, errors, json_body, op, ref
from gateway.models import ResolvedModel
from gateway.proxy.relay.event_relay import EventRelay
from gateway.proxy.relay.redaction import Redactor
from gateway.proxy.request_body import CompletionRequest, Kind
from gateway.proxy.settle.exchange import Exchange
from metering.pricing import TokenUsage

# How this API's errors look: OpenRouter's `{"error": {"code", "message", "metadata"}}`, or
# Anthropic's `{"type": "error", "error": {"type", "message"}}` (gateway.http.errors).
ErrorShape = Literal["openrouter", "anthropic"]


class ApiAdapter:
    kind: Kind
    upstream_path: str  # after the provider's base_url (which ends in /v1)
    error_shape: ErrorShape = "openrouter"
    reads_images: bool = False  # its input may hold images (priced per image)
    takes_x_api_key: bool = False  # the key may come as `x-api-key` (Anthropic's clients)

    def parse(self, raw: bytes, request: web.Request) -> CompletionRequest:
        """The request body checked: a 400 naming the field, before anything is reserved."""
        raise NotImplementedError

    def payload(self, body: dict[str, Any], req: CompletionRequest, model: ResolvedModel) -> bytes:
        """The provider's copy of `body` (a copy: it is changed) for `model`, its output capped
        within what admission reserved."""
        raise NotImplementedError

    def answer_usage(self, data: dict[str, Any]) -> TokenUsage | None:
        """The provider's usage in a whole answer; None when it reported none that is sane."""
        raise NotImplementedError

    def finish_reason(self, data: dict[str, Any]) -> str | None:
        """The answer's finish, in OpenRouter's words (stop, length, tool_calls, error...)."""
        raise NotImplementedError

    def estimate_output(self, data: dict[str, Any]) -> int:
        """Tokens of the answer's output when the provider reported none."""
        raise NotImplementedError

    def dress(self, data: dict[str, Any], exchange: Exchange, usage: TokenUsage) -> None:
        """The answer as the client gets it: the catalog's model id, `cost` in its usage."""
        raise NotImplementedError

    def stream_relay(self, exchange: Exchange, redactor: Redactor) -> EventRelay:
        raise NotImplementedError

    def native_finish_reason(self, data: dict[str, Any]) -> str | None:
        """How the provider itself said the answer ended, where it words it otherwise."""
        return None

    def external_user(self, body: dict[str, Any]) -> Any:
        """The end user the client named (OpenAI's `user`), for the record."""
        return body.get("user")

    def forward_headers(self, req: CompletionRequest) -> bytes:
        """Header lines (each ending in CRLF) the provider is sent beside the request."""
        return b""


def estimate_text_tokens(texts: list[str]) -> int:
    """About four bytes a token of returned text, when the provider reported no usage."""
    return sum(-(-len(text.encode()) // 4) for text in texts)


REFUSALS = (400, 401, 402, 403, 404, 408, 413, 429, 502, 503)


def api_operation(
    summary: str,
    answered: str,
    request_schema: str,
    json_schema: str,
    stream_schema: Any = None,
    shape: ErrorShape = "openrouter",
) -> dict[str, Any]:
    """One API's OpenAPI operation: its body, its answer (`answered` says what it is; JSON,
    and SSE when `stream_schema` is given), the generation id header and its refusals."""
    content: dict[str, Any] = {"application/json": {"schema": ref(json_schema)}}
    if stream_schema is not None:
        content["text/event-stream"] = {"schema": stream_schema}
    header = {"description": "the generation id", "required": True, "schema": STRING}
    error = "AnthropicError" if shape == "anthropic" else "Error"
    answers = {
        "200": {
            "description": answered,
            "headers": {"X-Generation-Id": header},
            "content": content,
        },
        **errors(*REFUSALS, shape="" if shape == "openrouter" else shape),
        "4XX": {
            "description": "The provider's own refusal of the request (such as a context that "
            "is too long), passed on with its status",
            "content": {"application/json": {"schema": ref(error)}},
        },
    }
    return op(summary, "completions", API_KEY, answers, body=json_body(ref(request_schema)))
