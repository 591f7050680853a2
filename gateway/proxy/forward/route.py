"""Forwarding: the provider's copy of the request, and the candidates' providers tried in order.

The request body reaches the provider as the client sent it, less the gateway's routing fields
(gateway.proxy.routing), with the model's upstream name and an output cap within what admission
reserved (`max_tokens`, or `max_completion_tokens` when the client used that), and a stream asks
for its usage (`stream_options.include_usage`).

Before any output, a try gives way: to the model's next provider when this one cannot be reached,
times out, answers 5xx or 429 (it is busy); to the next model (the request's `models`) after any
refusal, its 4xx included (such as a context that is too long). The last candidate's answer is
the client's. Every try that gave way is noted in the record (`failed_attempts`).
"""

import time
from typing import Any

import orjson
from aiohttp import web

from gateway.http.errors import ApiError
from gateway.models import ResolvedModel
from gateway.observability.metrics import FALLBACKS, UPSTREAM_ERRORS
from gateway.proxy.forward.provider_client import ProviderResponse
from gateway.proxy.forward.provider_errors import raise_provider_error
from gateway.proxy.forward.upstream import UpstreamFailure
from gateway.proxy.request_body import CompletionRequest, Kind
from gateway.proxy.routing import Candidate, provider_body
from gateway.proxy.settle.exchange import Exchange
from gateway.state import SERVICES

UPSTREAM_PATHS: dict[Kind, str] = {"chat": "/chat/completions", "completions": "/completions"}


async def forward(
    request: web.Request,
    exchange: Exchange,
    req: CompletionRequest,
    kind: Kind,
    route: tuple[Candidate, ...],
) -> ProviderResponse:
    """The first answer of the candidates' providers that does not give way (see above)."""
    upstream = request.app[SERVICES].upstream
    base = provider_body(req.body)
    failure: UpstreamFailure | None = None
    for m, (model, providers) in enumerate(route):
        exchange.model = model
        payload = _payload(base, req, model)
        for i, provider in enumerate(providers):
            last = m + 1 == len(route) and i + 1 == len(providers)
            exchange.provider_name = provider.name
            exchange.sent_at = time.monotonic()
            exchange.upstream_deadline = upstream.deadlines.watch()
            try:
                response = await upstream.post(provider, UPSTREAM_PATHS[kind], payload)
            except UpstreamFailure as exc:
                UPSTREAM_ERRORS.labels(provider.name, exc.kind).inc()
                failure = exc
                _gave_way(exchange, exc.kind, last)
                continue
            status = response.status
            if status >= 500:
                UPSTREAM_ERRORS.labels(provider.name, "status").inc()
            if status == 200:
                exchange.first_byte_at = time.monotonic()
                return response
            busy = status >= 500 or status == 429
            if not last and (busy or m + 1 < len(route)):
                response.release()
                _gave_way(exchange, status, last)
                if busy:
                    continue
                break  # a refusal of the request: this model's other providers would refuse too
            exchange.first_byte_at = time.monotonic()
            await raise_provider_error(
                response, provider.name, upstream.redactor.text, upstream.read
            )
    assert failure is not None
    status = 408 if failure.kind == "timeout" else 502
    raise ApiError(
        status,
        str(failure),
        "timeout" if status == 408 else "provider_error",
        provider_name=exchange.provider_name,
    )


def _payload(base: dict[str, Any], req: CompletionRequest, model: ResolvedModel) -> bytes:
    body = dict(base)
    body["model"] = model.config.upstream_name
    # The provider may generate no more than admission reserved for.
    limit = req.output_limit(model.config.max_output_tokens)
    if body.get("max_completion_tokens") is not None:
        body["max_completion_tokens"] = limit
    if body.get("max_completion_tokens") is None or body.get("max_tokens") is not None:
        body["max_tokens"] = limit
    if req.stream:
        options = body.get("stream_options") or {}
        body["stream_options"] = {**options, "include_usage": True}
    return orjson.dumps(body)


def _gave_way(exchange: Exchange, what: int | str, last: bool) -> None:
    """Note a try that gave way to the next (the last one's failure is the answer itself)."""
    if last:
        return
    exchange.failed_attempts.append(
        {"model": exchange.model.id, "provider": exchange.provider_name, "status": what}
    )
    reason = _reason(what)
    FALLBACKS.labels(exchange.provider_name, reason).inc()


def _reason(what: int | str) -> str:
    """A bounded label: connect, timeout or protocol; 429, 4xx or 5xx."""
    if isinstance(what, str):
        return what
    return "429" if what == 429 else f"{what // 100}xx"
