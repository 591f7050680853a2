"""Anthropic's Messages API adapter: `POST /api/v1/messages` (also under `/v1`), for the
Anthropic SDK and Claude Code, served by the pipeline as chat is.

The key may come as `x-api-key` (as Anthropic's clients send it) or as a Bearer token;
`anthropic-version` (2023-06-01 when absent) and `anthropic-beta` are passed on to the provider,
which is sent its own key as `x-api-key`. The worst case is the input's bound plus `max_tokens`
(required, as Anthropic has it). The usage is the answer's `usage`; cache writes and reads are
charged at the catalog's `input_cache_write` and `input_cache_read` prices. Errors on this
endpoint are in Anthropic's shape.
"""

from typing import Any

import orjson
from aiohttp import web

from gateway.http.describe import described, ref
from gateway.http.errors import bad_request
from gateway.models import ResolvedModel
from gateway.proxy.apis.adapter import ApiAdapter, api_operation, estimate_text_tokens
from gateway.proxy.apis.messages_stream import (
    MessagesRelay,
    finish_of,
    parse_messages_usage,
    usage_with_cost,
)
from gateway.proxy.pipeline import serve_completion
from gateway.proxy.relay.event_relay import EventRelay
from gateway.proxy.relay.redaction import Redactor
from gateway.proxy.request_body import (
    CompletionRequest,
    body_and_model,
    check_messages,
    check_number,
    stream_of,
    token_limit,
)
from gateway.proxy.settle.exchange import Exchange
from metering.pricing import TokenUsage

DEFAULT_VERSION = "2023-06-01"
PASSED_HEADERS = ("anthropic-version", "anthropic-beta")
MAX_HEADER_CHARS = 512
ROLES = ("user", "assistant")


class MessagesAdapter(ApiAdapter):
    kind = "messages"
    upstream_path = "/messages"
    error_shape = "anthropic"
    reads_images = True  # `image` blocks
    takes_x_api_key = True

    def parse(self, raw: bytes, request: web.Request) -> CompletionRequest:
        body, model = body_and_model(raw)
        check_messages(body.get("messages"), ROLES)
        system = body.get("system")
        if system is not None and not isinstance(system, (str, list)):
            raise bad_request("'system' must be a string or an array of text blocks", "system")
        limit = token_limit(body, "max_tokens")
        if limit is None:
            raise bad_request("'max_tokens' is required: a positive integer", "max_tokens")
        check_number(body, "temperature", 0, 1, whole=False)
        check_number(body, "top_p", 0, 1, whole=False)
        check_number(body, "top_k", 0, 2**31, whole=True)
        stops = body.get("stop_sequences")
        if stops is not None and not (
            isinstance(stops, list) and all(isinstance(s, str) for s in stops)
        ):
            raise bad_request("'stop_sequences' must be an array of strings", "stop_sequences")
        headers = _passed_headers(request)
        return CompletionRequest(
            body, model, stream_of(body), limit, 1, len(raw), 1, "messages", headers
        )

    def forward_headers(self, req: CompletionRequest) -> bytes:
        return req.headers

    def payload(self, body: dict[str, Any], req: CompletionRequest, model: ResolvedModel) -> bytes:
        body["model"] = model.config.upstream_name
        body["max_tokens"] = req.output_limit(model.config.max_output_tokens)
        return orjson.dumps(body)

    def answer_usage(self, data: dict[str, Any]) -> TokenUsage | None:
        return parse_messages_usage(data.get("usage"))

    def finish_reason(self, data: dict[str, Any]) -> str | None:
        return finish_of(data.get("stop_reason"))

    def native_finish_reason(self, data: dict[str, Any]) -> str | None:
        reason = data.get("stop_reason")
        return reason if isinstance(reason, str) else None

    def external_user(self, body: dict[str, Any]) -> Any:
        metadata = body.get("metadata")  # Anthropic's `metadata.user_id`
        return metadata.get("user_id") if isinstance(metadata, dict) else None

    def estimate_output(self, data: dict[str, Any]) -> int:
        texts: list[str] = []
        for block in data.get("content") or []:
            if isinstance(block, dict):
                for field in ("text", "thinking"):
                    if isinstance(block.get(field), str):
                        texts.append(block[field])
                if block.get("input") is not None:
                    texts.append(orjson.dumps(block["input"]).decode())
        return estimate_text_tokens(texts)

    def dress(self, data: dict[str, Any], exchange: Exchange, usage: TokenUsage) -> None:
        data["id"] = exchange.generation_id
        data["model"] = exchange.model.id
        data["usage"] = usage_with_cost(data.get("usage"), usage, exchange.cost)

    def stream_relay(self, exchange: Exchange, redactor: Redactor) -> EventRelay:
        return MessagesRelay(exchange, redactor)


def _passed_headers(request: web.Request) -> bytes:
    """`anthropic-version` and `anthropic-beta` as the provider is sent them."""
    lines = []
    for name in PASSED_HEADERS:
        value = request.headers.get(name, DEFAULT_VERSION if name == "anthropic-version" else "")
        if not value:
            continue
        if len(value) > MAX_HEADER_CHARS or not all(" " <= c <= "~" for c in value):
            raise bad_request(f"the {name} header must be printable ASCII", name)
        lines.append(f"{name}: {value}\r\n")
    return "".join(lines).encode("ascii")


MESSAGES = MessagesAdapter()
routes = web.RouteTableDef()


@routes.post("/api/v1/messages")
@routes.post("/v1/messages")
@described(
    api_operation(
        "Messages (Anthropic's Messages API)",
        "The provider's message, with `usage.cost`; a stream (`stream: true`) is Anthropic's SSE "
        "events, whose `message_delta` carries the usage with its cost",
        "MessageRequest",
        "Message",
        ref("MessageStreamEvent"),
        shape="anthropic",
    )
)
async def messages(request: web.Request) -> web.StreamResponse:
    return await serve_completion(request, MESSAGES)
