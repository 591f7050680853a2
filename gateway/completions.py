"""POST /api/v1/chat/completions and /api/v1/completions (also under /v1): admit, forward, settle.

Exactly two Redis round trips per request: the admission script before forwarding and the
settlement script after. Auth reads a cached hash -> account mapping.
"""

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import orjson
from aiohttp import web

from gateway.admission import admit
from gateway.exchange import Exchange
from gateway.http.auth import authenticate
from gateway.http.errors import ApiError
from gateway.http.json_input import read_body
from gateway.journal import JOURNAL
from gateway.models import ResolvedModel
from gateway.observability.metrics import (
    ACCESS_FIELDS,
    INFLIGHT,
    OVERHEAD_SECONDS,
    REQUEST_SECONDS,
    REQUESTS,
    SWITCH,
    TTFT_SECONDS,
    UPSTREAM_ERRORS,
    UPSTREAM_SECONDS,
    labelled,
)
from gateway.provider_client import ProviderResponse, UpstreamBroken
from gateway.provider_errors import (
    MAX_ANSWER_BYTES,
    AnswerTooLarge,
    raise_provider_error,
)
from gateway.provider_usage import parse_usage, usage_with_cost
from gateway.request_body import CompletionRequest, Kind, parse_completion_request
from gateway.settling import SETTLING
from gateway.state import CLOCK, MODELS, SERVICES, SERVING, SETTINGS
from gateway.streaming import relay_stream
from gateway.upstream import Upstream, UpstreamFailure
from metering.estimate import estimate_prompt
from metering.money import format_usd
from metering.pricing import TokenUsage

routes = web.RouteTableDef()
_UPSTREAM_PATHS: dict[Kind, str] = {"chat": "/chat/completions", "completions": "/completions"}


@routes.post("/api/v1/chat/completions")
@routes.post("/v1/chat/completions")
async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await handle_completion(request, "chat")


@routes.post("/api/v1/completions")
@routes.post("/v1/completions")
async def completions(request: web.Request) -> web.StreamResponse:
    return await handle_completion(request, "completions")


@dataclass(slots=True)
class Outcome:
    """What the metrics record of one completion request, whatever way it ends."""

    model: str = "none"
    provider: str = "none"
    status: int = 200
    error_type: str = "none"
    exchange: Exchange | None = None


async def handle_completion(request: web.Request, kind: Kind) -> web.StreamResponse:
    outcome = Outcome()
    received = time.monotonic()
    serving = request.app[SERVING]
    serving.count += 1
    if SWITCH.on:
        INFLIGHT.inc()
    try:
        response = await _handle(request, kind, outcome, received)
        outcome.status = response.status
        return response
    except ApiError as exc:
        outcome.status, outcome.error_type = exc.status, exc.error_type
        raise
    except asyncio.CancelledError:
        outcome.status, outcome.error_type = 499, "client_closed"
        raise
    except BaseException:
        outcome.status, outcome.error_type = 500, "internal_error"
        raise
    finally:
        serving.count -= 1
        if SWITCH.on:
            INFLIGHT.dec()
        # Counted and logged once the answer is on its way (see gateway.middleware).
        observed: Callable[[], dict[str, object]] = partial(
            _observed, outcome, received, time.monotonic()
        )
        request[ACCESS_FIELDS] = observed


def _observed(outcome: Outcome, received: float, ended: float) -> dict[str, object]:
    """The request's metrics, and the fields it adds to its access line."""
    exchange = outcome.exchange
    if exchange is not None and exchange.provider_name:
        outcome.provider = exchange.provider_name
    upstream = None
    if exchange is not None and exchange.sent_at is not None:
        upstream = (exchange.done_at or ended) - exchange.sent_at
    if SWITCH.on:
        _observe(outcome, received, ended, upstream)
    return _access_fields(outcome, upstream)


def _observe(outcome: Outcome, received: float, ended: float, upstream: float | None) -> None:
    labelled(
        REQUESTS, outcome.model, outcome.provider, f"{outcome.status // 100}xx", outcome.error_type
    ).inc()
    total = ended - received
    REQUEST_SECONDS.observe(total)
    if upstream is None:
        return
    exchange = outcome.exchange
    labelled(UPSTREAM_SECONDS, outcome.provider).observe(upstream)
    OVERHEAD_SECONDS.observe(max(total - upstream, 0.0))
    if exchange is not None and exchange.streamed and exchange.first_byte_at is not None:
        labelled(TTFT_SECONDS, outcome.provider).observe(exchange.first_byte_at - received)


def _access_fields(outcome: Outcome, upstream: float | None) -> dict[str, object]:
    fields: dict[str, object] = {
        "model": outcome.model,
        "provider": outcome.provider,
        "error_type": outcome.error_type,
    }
    exchange = outcome.exchange
    if exchange is not None:
        usage = exchange.usage
        fields.update(
            {
                "generation_id": exchange.generation_id,
                "account_id": exchange.account_id,
                "key": exchange.key_hash[:12],
                "streamed": exchange.streamed,
                "cancelled": exchange.cancelled,
                "prompt_tokens": usage.prompt if usage else 0,
                "completion_tokens": usage.completion if usage else 0,
                "cost_usd": format_usd(exchange.cost),
            }
        )
        if upstream is not None:
            fields["upstream_ms"] = round(upstream * 1000, 3)
    return fields


async def _handle(
    request: web.Request, kind: Kind, outcome: Outcome, received: float
) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    services = request.app[SERVICES]
    clock = request.app[CLOCK]
    account_id, key_hash = await authenticate(request, services.keys)
    if request.content_length is not None and request.content_length > settings.max_body_bytes:
        raise ApiError(
            413,
            f"request body is larger than {settings.max_body_bytes} bytes",
            max_bytes=settings.max_body_bytes,
        )
    req = parse_completion_request(await read_body(request), kind)
    model = request.app[MODELS].get(req.model)
    if model is None:
        raise ApiError(
            404,
            f"model {req.model!r} is not available here; see GET /api/v1/models",
            "model_not_found",
        )
    outcome.model, outcome.provider = model.id, model.providers[0].name

    prompt = estimate_prompt(req.body, req.size)
    if kind != "chat":  # a stray `messages` on /completions never reaches the model as images
        prompt = prompt._replace(images=0)
    admitted = await admit(request, account_id, key_hash, model, req, prompt)
    generation_id = admitted.generation_id

    exchange = Exchange(
        metering=services.metering,
        clock=clock,
        model=model,
        account_id=account_id,
        key_hash=key_hash,
        generation_id=generation_id,
        streamed=req.stream,
        prompt_estimate=prompt.tokens,
        images=prompt.images,
        prompt_likely=prompt.likely,
        response_headers=admitted.headers,
        started=received,
        journal=request.app[JOURNAL],
        settling=request.app[SETTLING],
    )
    outcome.exchange = exchange
    if admitted.reserve:
        exchange.hold_reservation(settings.reservation_timeout_seconds / 3)
    deadlines = services.upstream.deadlines
    try:
        upstream = await _forward(request, exchange, req, kind)
        if req.stream:
            deadlines.forget()  # a stream keeps to exchange.upstream_deadline as it relays
            return await relay_stream(request, upstream, exchange)
        return await _complete(upstream, exchange, model, services.upstream)
    except ApiError as exc:
        exchange.status = exc.status
        # The request was admitted and counted: its record and rate-limit state still apply.
        exc.headers = {**exchange.response_headers, **exc.headers, "X-Generation-Id": generation_id}
        raise
    except asyncio.CancelledError:
        exchange.cancelled = True  # the client went away (handler_cancellation)
        raise
    except BaseException:
        exchange.status = 500
        raise
    finally:
        deadlines.forget()
        await exchange.settle()


async def _forward(
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
            response = await upstream.post(provider, _UPSTREAM_PATHS[kind], payload)
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


async def _complete(
    upstream: ProviderResponse, exchange: Exchange, model: ResolvedModel, caller: Upstream
) -> web.Response:
    try:
        raw = await caller.read(upstream, MAX_ANSWER_BYTES)
    except TimeoutError as exc:
        raise ApiError(
            408,
            f"provider {exchange.provider_name} did not finish its answer in time",
            "timeout",
            provider_name=exchange.provider_name,
        ) from exc
    except (UpstreamBroken, AnswerTooLarge) as exc:
        raise ApiError(
            502,
            f"provider {exchange.provider_name} broke off its answer",
            "provider_error",
            provider_name=exchange.provider_name,
        ) from exc
    finally:
        upstream.release()
    exchange.done_at = time.monotonic()
    try:
        data = orjson.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("not an object")
    except (orjson.JSONDecodeError, ValueError):
        raise ApiError(
            502,
            f"provider {exchange.provider_name} sent an invalid response",
            "provider_error",
            provider_name=exchange.provider_name,
        ) from None
    tokens = parse_usage(data.get("usage"))
    if tokens is None:
        tokens = TokenUsage(prompt=exchange.prompt_estimate, completion=_estimate_output(data))
        exchange.charge(tokens, "estimated")
    else:
        exchange.charge(tokens, "provider")
    exchange.finish_reason = _finish_reason(data)
    await exchange.settle()
    data["id"] = exchange.generation_id
    data["model"] = model.id
    data["provider"] = exchange.provider_name
    data["usage"] = usage_with_cost(data.get("usage"), tokens, exchange.cost)
    return web.Response(  # the provider's answer, re-encoded, with every secret taken out
        body=caller.redactor.bytes(orjson.dumps(data)),
        content_type="application/json",
        headers={**exchange.response_headers, "X-Generation-Id": exchange.generation_id},
    )


def _finish_reason(data: dict[str, Any]) -> str | None:
    choices = data.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        reason = choices[0].get("finish_reason")
        return reason if isinstance(reason, str) else None
    return None


def _estimate_output(data: dict[str, Any]) -> int:
    """Tokens of the returned text when the provider reported none: about four bytes a token."""
    total = 0
    for choice in data.get("choices") or []:
        if isinstance(choice, dict):
            message = choice.get("message") or {}
            text = message.get("content") if isinstance(message, dict) else None
            text = text if isinstance(text, str) else choice.get("text")
            if isinstance(text, str):
                total += -(-len(text.encode()) // 4)
    return total
