"""Forwarding: the provider's copy of the request, and the model's providers tried in order.

The request body reaches the provider as the client sent it, with the model's upstream name and
an output cap within what admission reserved (`max_tokens`, or `max_completion_tokens` when the
client used that), and a stream asks for its usage (`stream_options.include_usage`). A provider
that cannot be reached, or answers 5xx before any output, gives way to the next one.
"""

import time
from typing import Any

import orjson
from aiohttp import web

from gateway.http.errors import ApiError
from gateway.observability.metrics import UPSTREAM_ERRORS
from gateway.proxy.forward.provider_client import ProviderResponse
from gateway.proxy.forward.provider_errors import raise_provider_error
from gateway.proxy.forward.upstream import UpstreamFailure
from gateway.proxy.request_body import CompletionRequest, Kind
from gateway.proxy.settle.exchange import Exchange
from gateway.state import SERVICES

UPSTREAM_PATHS: dict[Kind, str] = {"chat": "/chat/completions", "completions": "/completions"}


async def forward(
    request: web.Request, exchange: Exchange, req: CompletionRequest, kind: Kind
) -> ProviderResponse:
    """Send to the model's providers in fallback order; a 5xx or no answer moves to the next."""
    body: dict[str, Any] = dict(req.body)
    body["model"] = exchange.model.config.upstream_name
    # The provider may generate no more than admission reserved for.
    limit = req.output_limit(exchange.model.config.max_output_tokens)
    if body.get("max_completion_tokens") is not None:
        body["max_completion_tokens"] = limit
    if body.get("max_completion_tokens") is None or body.get("max_tokens") is not None:
        body["max_tokens"] = limit
    if req.stream:
        options = body.get("stream_options") or {}
        body["stream_options"] = {**options, "include_usage": True}
    payload = orjson.dumps(body)
    upstream = request.app[SERVICES].upstream
    providers = exchange.model.providers
    failure: UpstreamFailure | None = None
    for i, provider in enumerate(providers):
        exchange.provider_name = provider.name
        exchange.sent_at = time.monotonic()
        exchange.upstream_deadline = upstream.deadlines.watch()
        try:
            response = await upstream.post(provider, UPSTREAM_PATHS[kind], payload)
        except UpstreamFailure as exc:
            UPSTREAM_ERRORS.labels(provider.name, exc.kind).inc()
            failure = exc
            continue
        if response.status >= 500:
            UPSTREAM_ERRORS.labels(provider.name, "status").inc()
        if response.status >= 500 and i + 1 < len(providers):
            response.release()
            continue
        exchange.first_byte_at = time.monotonic()
        if response.status != 200:
            await raise_provider_error(
                response, provider.name, upstream.redactor.text, upstream.read
            )
        return response
    assert failure is not None
    status = 408 if failure.kind == "timeout" else 502
    raise ApiError(
        status,
        str(failure),
        "timeout" if status == 408 else "provider_error",
        provider_name=exchange.provider_name,
    )
