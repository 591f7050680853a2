"""The chat and completions API adapter: `POST /api/v1/chat/completions` and
`/api/v1/completions` (also under `/v1`), served by the pipeline (gateway.proxy.pipeline)."""

from typing import Any

import orjson
from aiohttp import web

from gateway.http.describe import STRING, described, obj
from gateway.models import ResolvedModel
from gateway.proxy.apis.adapter import ApiAdapter, api_operation, estimate_text_tokens
from gateway.proxy.pipeline import serve_completion
from gateway.proxy.relay.event_relay import EventRelay
from gateway.proxy.relay.provider_usage import parse_usage, usage_with_cost
from gateway.proxy.relay.redaction import Redactor
from gateway.proxy.relay.sse_relay import SseRelay
from gateway.proxy.request_body import CompletionRequest, Kind, parse_completion_request
from gateway.proxy.settle.exchange import Exchange
from metering.pricing import TokenUsage


class ChatAdapter(ApiAdapter):
    """OpenAI's chat completions (`kind` chat) and legacy completions (`kind` completions)."""

    def __init__(self, kind: Kind) -> None:
        self.kind = kind
        self.upstream_path = "/chat/completions" if kind == "chat" else "/completions"
        self.reads_images = kind == "chat"

    def parse(self, raw: bytes, request: web.Request) -> CompletionRequest:
        return parse_completion_request(raw, self.kind)

    def payload(self, body: dict[str, Any], req: CompletionRequest, model: ResolvedModel) -> bytes:
        body["model"] = model.config.upstream_name
        limit = req.output_limit(model.config.max_output_tokens)
        if body.get("max_completion_tokens") is not None:
            body["max_completion_tokens"] = limit
        if body.get("max_completion_tokens") is None or body.get("max_tokens") is not None:
            body["max_tokens"] = limit
        if req.stream:
            options = body.get("stream_options") or {}
            body["stream_options"] = {**options, "include_usage": True}
        return orjson.dumps(body)

    def answer_usage(self, data: dict[str, Any]) -> TokenUsage | None:
        return parse_usage(data.get("usage"))

    def finish_reason(self, data: dict[str, Any]) -> str | None:
        choices = data.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            reason = choices[0].get("finish_reason")
            return reason if isinstance(reason, str) else None
        return None

    def estimate_output(self, data: dict[str, Any]) -> int:
        texts = []
        for choice in data.get("choices") or []:
            if isinstance(choice, dict):
                message = choice.get("message") or {}
                text = message.get("content") if isinstance(message, dict) else None
                text = text if isinstance(text, str) else choice.get("text")
                if isinstance(text, str):
                    texts.append(text)
        return estimate_text_tokens(texts)

    def dress(self, data: dict[str, Any], exchange: Exchange, usage: TokenUsage) -> None:
        data["id"] = exchange.generation_id
        data["model"] = exchange.model.id  # the model that served (a fallback, perhaps)
        data["provider"] = exchange.provider_name
        data["usage"] = usage_with_cost(data.get("usage"), usage, exchange.cost)

    def stream_relay(self, exchange: Exchange, redactor: Redactor) -> EventRelay:
        return SseRelay(exchange, redactor)


CHAT = ChatAdapter("chat")
COMPLETIONS = ChatAdapter("completions")


routes = web.RouteTableDef()
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
ANSWERED = (
    "The answer, with `usage.cost`; a stream (`stream: true`) is SSE whose last chunk before "
    "`data: [DONE]` carries the usage"
)


def _completion(summary: str, request_schema: str) -> dict[str, object]:
    return api_operation(summary, ANSWERED, request_schema, "Completion", SSE_EVENT)


@routes.post("/api/v1/chat/completions")
@routes.post("/v1/chat/completions")
@described(_completion("Chat completions", "ChatCompletionRequest"))
async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await serve_completion(request, CHAT)


@routes.post("/api/v1/completions")
@routes.post("/v1/completions")
@described(_completion("Text completions", "CompletionRequest"))
async def completions(request: web.Request) -> web.StreamResponse:
    return await serve_completion(request, COMPLETIONS)
