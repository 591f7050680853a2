"""Relay a provider's SSE stream to the client as it arrives, and settle what it generated.

When the client goes away, the account is charged for what was generated until then, never more
than the whole answer: when some output had been sent, the provider's stream is read on (not
relayed) for a few seconds for its own usage, then closed (see _client_gone and event_relay.py).

A client that reads slowly slows the relay down (each write waits for the socket to drain, so
the provider's stream waits too, and memory stays flat); one that takes no bytes at all for
`client_write_timeout` seconds is treated as gone.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from gateway.observability.metrics import OPEN_STREAMS
from gateway.proxy.forward.provider_connection import ProviderResponse, UpstreamBroken
from gateway.proxy.relay.client_writes import ClientWrites
from gateway.proxy.relay.event_relay import EventRelay, ProviderStreamBroken
from gateway.proxy.relay.redaction import Redactor
from gateway.proxy.settle.exchange import Exchange
from gateway.state import SERVICES, SETTINGS

log = logging.getLogger("gateway.streaming")

KEEPALIVE = b": keep-alive\n\n"
# After a hang-up, at most this much more of the provider's stream is read for its usage: the
# usage comes last, and a stream with more still to come is cut off (and estimated) rather than
# read through, whatever its pace.
READ_FOR_USAGE_BYTES = 1024 * 1024


async def relay_stream(
    request: web.Request,
    upstream: ProviderResponse,
    exchange: Exchange,
    relay_for: Callable[[Exchange, Redactor], EventRelay],
) -> web.StreamResponse:
    """Relay with the API's own relay (`relay_for`: an adapter's `stream_relay`)."""
    relay = relay_for(exchange, request.app[SERVICES].upstream.redactor)
    response = web.StreamResponse(
        status=200,
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
            "X-Generation-Id": exchange.generation_id,
            **exchange.response_headers,
        },
    )
    try:
        await response.prepare(request)
    except ConnectionResetError:
        upstream.close()
        exchange.cancelled = True
        relay.charge()
        return response
    except BaseException:
        upstream.close()
        raise

    OPEN_STREAMS.inc()
    try:
        return await _relay(request, upstream, exchange, relay, response)
    finally:
        OPEN_STREAMS.dec()


async def _relay(
    request: web.Request,
    upstream: ProviderResponse,
    exchange: Exchange,
    relay: EventRelay,
    response: web.StreamResponse,
) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    failure: str | None = None
    writes = ClientWrites(request, response, settings.client_write_timeout)
    send = writes.send
    try:
        async for piece in _pieces(
            upstream,
            settings.stream_keepalive_seconds,
            settings.upstream_read_timeout,
            exchange.upstream_deadline,
        ):
            out = KEEPALIVE if piece is None else relay.feed(piece)
            if out:
                await send(out)
            if relay.done:
                break
        else:
            tail = relay.end()
            if tail:
                await send(tail)
    except ConnectionResetError:
        # The client is gone: bill what was generated until now, and stop the provider.
        await _client_gone(upstream, exchange, relay, settings.cancelled_stream_usage_seconds)
        return response
    except asyncio.CancelledError:
        # The same, where the server cancels handlers of lost connections (handler_cancellation).
        await _client_gone(upstream, exchange, relay, settings.cancelled_stream_usage_seconds)
        raise
    except (UpstreamBroken, TimeoutError, ProviderStreamBroken) as exc:
        failure = _describe(exc, exchange.provider_name)
        log.warning("stream %s: %s", exchange.generation_id, failure)
    finally:
        upstream.release()
        # No watch left behind by a stream that ends here (a client gone): its timer would
        # hold the request and all it refers to until the write timeout. _finish's writes
        # watch anew.
        writes.close()

    try:
        await _finish(exchange, relay, failure, send, response)
    finally:
        writes.close()
    return response


async def _finish(
    exchange: Exchange,
    relay: EventRelay,
    failure: str | None,
    send: "Callable[[bytes], Awaitable[None]]",
    response: web.StreamResponse,
) -> None:
    """The provider's stream is over: settle, then send the relay's tail (what was kept back,
    the error if it broke off, the usage with its cost)."""
    relay.charge()
    if failure is not None:
        exchange.finish_reason = "error"
    elif not relay.done:
        log.info("stream %s: provider closed without [DONE]", exchange.generation_id)
    await exchange.settle()
    try:
        await send(relay.tail(failure))
        await response.write_eof()
    except ConnectionResetError:
        exchange.cancelled = True


async def _client_gone(
    upstream: ProviderResponse, exchange: Exchange, relay: EventRelay, usage_seconds: float
) -> None:
    """The client hung up. When it had been sent some output, the provider's stream is read on
    (not relayed) for up to `usage_seconds` and READ_FOR_USAGE_BYTES, until its usage arrives:
    the client is then charged the provider's own prompt count and its share of the output
    tokens, instead of an estimate (event_relay.py). The provider is stopped then, or at once when
    nothing had been sent."""
    relay.client_left()
    exchange.cancelled = True
    reason = exchange.finish_reason
    try:
        if relay.content_chunks and usage_seconds > 0 and relay.usage is None and not relay.done:
            await _read_for_usage(upstream, relay, usage_seconds, exchange.upstream_deadline)
    finally:
        upstream.close()
        exchange.finish_reason = reason or "cancelled"
        relay.charge()


async def _read_for_usage(
    upstream: ProviderResponse, relay: EventRelay, seconds: float, deadline: float | None
) -> None:
    until = asyncio.get_running_loop().time() + seconds
    budget = READ_FOR_USAGE_BYTES
    try:
        async with asyncio.timeout_at(until if deadline is None else min(until, deadline)):
            while relay.usage is None and not relay.done and budget > 0:
                piece = await upstream.readany()
                if not piece:
                    break
                budget -= len(piece)
                relay.feed(piece)
    except (TimeoutError, UpstreamBroken, ProviderStreamBroken):
        pass  # no usage in time: the estimate stands


async def _pieces(
    upstream: ProviderResponse, keepalive: float, read_timeout: float, deadline: float | None
) -> "Any":
    """The provider's bytes as they come; None after each `keepalive` seconds of silence;
    TimeoutError once the whole answer has taken past `deadline` (event-loop time)."""
    loop = asyncio.get_running_loop()
    silent = 0.0
    while True:
        now = loop.time()
        until, overdue = now + keepalive, False
        if deadline is not None and deadline <= until:
            if deadline <= now:
                raise TimeoutError("the provider's whole answer took too long")
            until, overdue = deadline, True
        piece = await upstream.read_until(until)
        if piece is None:  # nothing came in time (one timer: the provider client's own)
            if overdue:
                raise TimeoutError("the provider's whole answer took too long")
            silent += keepalive
            if silent >= read_timeout:
                raise TimeoutError("provider sent nothing within the read timeout")
            yield None
            continue
        if not piece:
            return
        silent = 0.0
        yield piece


def _describe(exc: BaseException, provider: str) -> str:
    if isinstance(exc, TimeoutError):
        return f"provider {provider} timed out (silent too long, or the answer took too long)"
    if isinstance(exc, ProviderStreamBroken):
        return f"provider {provider} sent a malformed stream"
    return f"provider {provider} broke off the stream"
