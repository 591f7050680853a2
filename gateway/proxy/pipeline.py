"""The request path, stage by stage: read this module to follow one completion request.

    1. inbound     gateway.http.auth           the bearer key -> account (cached), key guessing
                   gateway.proxy.request_body  the body: size cap, JSON, the fields that cost
    2. route       gateway.proxy.routing       the model, then its fallbacks (`models`), each
                                               with its listed prices and providers
    3. estimate    metering.estimate           the prompt's bound (and its likely count)
    4. admission   gateway.proxy.admission     ONE Redis round trip: key, balance, limits, the
                                               worst case reserved (401, 402, 429 or admitted)
    5. forward     gateway.proxy.forward       the providers in order (route), our HTTP/1.1
                                               client (provider_client, http1), their refusals
    6. relay       gateway.proxy.relay         a stream event by event (streaming, event_relay), or
                                               the answer whole (answer); secrets taken out
    7. settlement  gateway.proxy.settle        ONE Redis round trip: the exact cost, the record;
                                               journaled when Redis is away (exchange, journal)

An API adapter (gateway.proxy.apis: chat, completions, embeddings, responses, messages) names its
routes and calls `serve_completion` with itself: what differs between APIs (the body's fields,
the provider's path, where the usage is, how cost goes into the answer) is the adapter's.
Exactly two Redis round trips per request whatever the features: the admission script and the
settlement script.
"""

import asyncio
import time

from aiohttp import web

from gateway.http.auth import authenticate
from gateway.http.errors import ERROR_SHAPE, ApiError
from gateway.http.json_input import read_body
from gateway.observability.metrics import INFLIGHT, SWITCH
from gateway.proxy.admission import admit
from gateway.proxy.apis.adapter import ApiAdapter
from gateway.proxy.forward.provider_stats import ProviderStats
from gateway.proxy.forward.route import forward
from gateway.proxy.observe import Outcome, record_when_answered
from gateway.proxy.relay.answer import relay_answer
from gateway.proxy.relay.streaming import relay_stream
from gateway.proxy.request_body import CompletionRequest
from gateway.proxy.routing import Candidate, candidates
from gateway.proxy.settle.exchange import Exchange
from gateway.proxy.settle.journal import JOURNAL
from gateway.proxy.settle.settling import SETTLING
from gateway.state import CLOCK, MODELS, SERVICES, SERVING, SETTINGS
from metering.estimate import estimate_prompt


async def serve_completion(request: web.Request, api: ApiAdapter) -> web.StreamResponse:
    """One request of `api`, its outcome recorded whatever way it ends."""
    request[ERROR_SHAPE] = api.error_shape
    outcome = Outcome()
    received = time.monotonic()
    serving = request.app[SERVING]
    serving.count += 1
    if SWITCH.on:
        INFLIGHT.inc()
    try:
        response = await _handle(request, api, outcome, received)
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
        record_when_answered(request, outcome, received)


async def _handle(
    request: web.Request, api: ApiAdapter, outcome: Outcome, received: float
) -> web.StreamResponse:
    """The stages in order (see the module's docstring)."""
    services = request.app[SERVICES]
    account_id, key_hash = await authenticate(request, services.keys, api.takes_x_api_key)  # 1
    req = api.parse(await _body(request), request)
    route = candidates(req.body, req.model, request.app[MODELS], services.upstream.stats, api.kind)
    model = route[0].model  # 2
    outcome.model, outcome.provider = model.id, model.providers[0].name
    prompt = estimate_prompt(req.body, req.size)  # 3; images only in the input the model reads:
    prompt = prompt if api.reads_images else prompt._replace(images=0)
    models = (model,) if len(route) == 1 else tuple([c.model for c in route])
    admitted = await admit(request, account_id, key_hash, models, req, prompt)  # 4
    exchange = Exchange(
        metering=services.metering,
        clock=request.app[CLOCK],
        model=model,
        account_id=account_id,
        key_hash=key_hash,
        generation_id=admitted.generation_id,
        streamed=req.stream,
        prompt_estimate=prompt.tokens,
        images=prompt.images,
        prompt_likely=prompt.likely,
        response_headers=admitted.headers,
        lease=admitted.lease,
        holds=admitted.holds,
        started=received,
        journal=request.app[JOURNAL],
        settling=request.app[SETTLING],
        generates=req.generates,
        external_user=api.external_user(req.body),
        origin=request.headers.get("HTTP-Referer"),
    )
    outcome.exchange = exchange
    # A lease's expiry is the lease's own; a place in flight expires with the reservation.
    if (admitted.reserve and admitted.lease is None) or any(h.in_flight for h in admitted.holds):
        exchange.hold_reservation(request.app[SETTINGS].reservation_timeout_seconds / 3)
    return await _forward_and_settle(request, api, req, route, exchange)


async def _forward_and_settle(
    request: web.Request,
    api: ApiAdapter,
    req: CompletionRequest,
    route: tuple[Candidate, ...],
    exchange: Exchange,
) -> web.StreamResponse:
    """Stages 5 to 7 of an admitted request: settled once, whatever happens."""
    services = request.app[SERVICES]
    deadlines = services.upstream.deadlines
    try:
        upstream = await forward(request, exchange, req, api, route)  # 5
        if req.stream:  # 6
            deadlines.forget()  # a stream keeps to exchange.upstream_deadline as it relays
            return await relay_stream(request, upstream, exchange, api.stream_relay)
        return await relay_answer(upstream, exchange, services.upstream, api)
    except ApiError as exc:
        exchange.status = exc.status
        # The request was admitted and counted: its record and rate-limit state still apply.
        exc.headers = {
            **exchange.response_headers,
            **exc.headers,
            "X-Generation-Id": exchange.generation_id,
        }
        raise
    except asyncio.CancelledError:
        exchange.cancelled = True  # the client went away (handler_cancellation)
        raise
    except BaseException:
        exchange.status = 500
        raise
    finally:
        deadlines.forget()
        await exchange.settle()  # 7, once whatever happened
        _measure(services.upstream.stats, exchange)


def _measure(stats: ProviderStats, exchange: Exchange) -> None:
    """The serving provider's latency and throughput, for `provider.sort` (answered requests
    only: a failure says nothing of its speed)."""
    sent, first = exchange.sent_at, exchange.first_byte_at
    if exchange.status != 200 or sent is None or first is None:
        return
    usage = exchange.usage
    generated = (exchange.done_at or first) - first
    stats.observe(exchange.provider_name, first - sent, usage.completion if usage else 0, generated)


async def _body(request: web.Request) -> bytes:
    """The body, refused before it is read when its Content-Length is over the cap."""
    limit = request.app[SETTINGS].max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, f"request body is larger than {limit} bytes", max_bytes=limit)
    return await read_body(request)
