"""The Responses API adapter: `POST /api/v1/responses` (also under `/v1`), OpenAI's newer API
(the Agents SDK, Codex), served by the pipeline as chat is.

The worst case is the input's bound plus `max_output_tokens` (the model's cap when absent); the
usage is the answer's `usage` (`input_tokens` with `input_tokens_details.cached_tokens`,
`output_tokens` with `output_tokens_details.reasoning_tokens`), in a stream the
`response.completed` event's (responses_stream.py), and `cost` goes into it there. The answer's
`id` stays the provider's: `previous_response_id` and `store` are the provider's state, and pass
through; the generation id is in `X-Generation-Id`. `background: true` is refused: its usage
would come after the answer, where the gateway cannot see it.
"""

from typing import Any

import orjson
from aiohttp import web

from gateway.http.describe import described, ref
from gateway.http.errors import bad_request
from gateway.models import ResolvedModel
from gateway.proxy.apis.adapter import ApiAdapter, api_operation, estimate_text_tokens
from gateway.proxy.apis.responses_stream import (
    ResponsesRelay,
    finish_of,
    native_finish_of,
    parse_responses_usage,
    usage_with_cost,
)
from gateway.proxy.pipeline import serve_completion
from gateway.proxy.relay.event_relay import EventRelay
from gateway.proxy.relay.redaction import Redactor
from gateway.proxy.request_body import (
    CompletionRequest,
    body_and_model,
    check_number,
    stream_of,
    token_limit,
)
from gateway.proxy.settle.exchange import Exchange
from metering.pricing import TokenUsage


class ResponsesAdapter(ApiAdapter):
    kind = "responses"
    upstream_path = "/responses"
    reads_images = True  # `input_image` parts

    def parse(self, raw: bytes, request: web.Request) -> CompletionRequest:
        body, model = body_and_model(raw)
        value = body.get("input")
        if value is None and not isinstance(body.get("prompt"), dict):
            raise bad_request("'input' is required: a string or an array of items", "input")
        if value is not None and not isinstance(value, (str, list)):
            raise bad_request("'input' must be a string or an array of items", "input")
        if isinstance(value, list) and not all(isinstance(item, dict) for item in value):
            raise bad_request("'input' items must be objects", "input")
        instructions = body.get("instructions")
        if instructions is not None and not isinstance(instructions, (str, list)):
            raise bad_request("'instructions' must be a string", "instructions")
        for name, kind, words in (
            ("previous_response_id", str, "a string"),
            ("store", bool, "true or false"),
        ):
            if body.get(name) is not None and not isinstance(body[name], kind):
                raise bad_request(f"'{name}' must be {words}", name)
        if body.get("background"):
            raise bad_request(
                "'background' is not supported here: its usage would arrive after the answer, "
                "where the gateway cannot meter it",
                "background",
            )
        check_number(body, "temperature", 0, 2, whole=False)
        check_number(body, "top_p", 0, 1, whole=False)
        check_number(body, "top_logprobs", 0, 20, whole=True)
        limit = token_limit(body, "max_output_tokens")
        return CompletionRequest(body, model, stream_of(body), limit, 1, len(raw), 1, "responses")

    def payload(self, body: dict[str, Any], req: CompletionRequest, model: ResolvedModel) -> bytes:
        body["model"] = model.config.upstream_name
        body["max_output_tokens"] = req.output_limit(model.config.max_output_tokens)
        return orjson.dumps(body)

    def answer_usage(self, data: dict[str, Any]) -> TokenUsage | None:
        return parse_responses_usage(data.get("usage"))

    def finish_reason(self, data: dict[str, Any]) -> str | None:
        return finish_of(data)

    def native_finish_reason(self, data: dict[str, Any]) -> str | None:
        return native_finish_of(data)

    def estimate_output(self, data: dict[str, Any]) -> int:
        texts: list[str] = []
        for item in data.get("output") or []:
            parts = item.get("content") if isinstance(item, dict) else None
            for part in parts if isinstance(parts, list) else []:
                text = part.get("text") if isinstance(part, dict) else None
                if isinstance(text, str):
                    texts.append(text)
            arguments = item.get("arguments") if isinstance(item, dict) else None
            if isinstance(arguments, str):
                texts.append(arguments)
        return estimate_text_tokens(texts)

    def dress(self, data: dict[str, Any], exchange: Exchange, usage: TokenUsage) -> None:
        data["model"] = exchange.model.id  # the id stays the provider's (see above)
        data["provider"] = exchange.provider_name
        data["usage"] = usage_with_cost(data.get("usage"), usage, exchange.cost)

    def stream_relay(self, exchange: Exchange, redactor: Redactor) -> EventRelay:
        return ResponsesRelay(exchange, redactor)


RESPONSES = ResponsesAdapter()
routes = web.RouteTableDef()


@routes.post("/api/v1/responses")
@routes.post("/v1/responses")
@described(
    api_operation(
        "Responses (OpenAI's Responses API)",
        "The provider's response, with `usage.cost`; a stream (`stream: true`) is SSE of typed "
        "events whose last (`response.completed`, `response.incomplete` or `response.failed`) "
        "carries the usage with its cost",
        "ResponseRequest",
        "Response",
        ref("ResponseStreamEvent"),
    )
)
async def responses(request: web.Request) -> web.StreamResponse:
    return await serve_completion(request, RESPONSES)
