"""The embeddings API adapter: `POST /api/v1/embeddings` (also under `/v1`), served by the
pipeline (gateway.proxy.pipeline) as chat is: the same admission, settlement, limits and record.

An embedding reads input and writes no output: the reservation is the input's worst case at the
model's prompt price, the charge `usage.prompt_tokens` at that price, and zero completion
insurance does not apply (there is no completion to miss). The answer is the provider's, with
`usage.cost` added; `encoding_format: "base64"` passes through untouched.
"""

from typing import Any

import orjson
from aiohttp import web

from gateway.http.describe import described
from gateway.models import ResolvedModel
from gateway.proxy.apis.adapter import ApiAdapter, api_operation
from gateway.proxy.pipeline import serve_completion
from gateway.proxy.relay.event_relay import EventRelay
from gateway.proxy.relay.provider_usage import parse_usage, usage_with_cost
from gateway.proxy.relay.redaction import Redactor
from gateway.proxy.request_body import CompletionRequest, parse_completion_request
from gateway.proxy.settle.exchange import Exchange
from metering.pricing import TokenUsage


class EmbeddingsAdapter(ApiAdapter):
    kind = "embeddings"
    upstream_path = "/embeddings"

    def parse(self, raw: bytes, request: web.Request) -> CompletionRequest:
        return parse_completion_request(raw, "embeddings")

    def payload(self, body: dict[str, Any], req: CompletionRequest, model: ResolvedModel) -> bytes:
        body["model"] = model.config.upstream_name  # no output to cap, no stream
        return orjson.dumps(body)

    def answer_usage(self, data: dict[str, Any]) -> TokenUsage | None:
        return parse_usage(data.get("usage"), output=False)

    def finish_reason(self, data: dict[str, Any]) -> str | None:
        return None

    def estimate_output(self, data: dict[str, Any]) -> int:
        return 0

    def dress(self, data: dict[str, Any], exchange: Exchange, usage: TokenUsage) -> None:
        data["id"] = exchange.generation_id
        data["model"] = exchange.model.id
        data["provider"] = exchange.provider_name
        data["usage"] = usage_with_cost(data.get("usage"), usage, exchange.cost, output=False)

    def stream_relay(self, exchange: Exchange, redactor: Redactor) -> EventRelay:
        raise AssertionError("an embeddings request is never a stream (request_body.py)")


EMBEDDINGS = EmbeddingsAdapter()

routes = web.RouteTableDef()


@routes.post("/api/v1/embeddings")
@routes.post("/v1/embeddings")
@described(
    api_operation(
        "Embeddings",
        "The provider's embeddings, with `usage.cost`",
        "EmbeddingRequest",
        "Embeddings",
    )
)
async def embeddings(request: web.Request) -> web.StreamResponse:
    return await serve_completion(request, EMBEDDINGS)
