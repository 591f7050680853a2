"""Relay a provider's SSE stream to the client as it arrives, and settle what it generated.

The relay parses only what it must: each event is cut at its blank line; the provider's chunk id
and model name are swapped for ours with a bytes replace; the one chunk that carries `usage` is
held back, settled, and sent last with `cost` added, just before `data: [DONE]`. Memory per stream
is one partial event (bounded) and a few counters.

When the client goes away, the upstream request is closed at once, and the account is charged for
what the provider sent until then: its usage if it got that far, else one token per content chunk.
"""

import asyncio
import logging
import re
import time
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from gateway.exchange import Exchange
from gateway.provider_usage import parse_usage, usage_with_cost
from gateway.state import SETTINGS
from metering.pricing import TokenUsage

log = logging.getLogger("gateway.streaming")

MAX_EVENT_BYTES = 1024 * 1024
_FINISH = re.compile(rb'"finish_reason"\s*:\s*"([A-Za-z_]+)"')
_ID = re.compile(rb'"id"\s*:\s*"([^"]{1,200})"')
KEEPALIVE = b": keep-alive\n\n"
DONE = b"data: [DONE]\n\n"


class ProviderStreamBroken(Exception):
    pass


class SseRelay:
    """Turns the provider's bytes into the client's bytes, one complete event at a time."""

    def __init__(self, exchange: Exchange) -> None:
        self.exchange = exchange
        self.buffer = b""
        self.content_chunks = 0
        self.done = False
        self.usage_chunk: dict[str, Any] | None = None
        self.usage: TokenUsage | None = None
        self.object_name = "chat.completion.chunk"
        self.created = int(time.time())
        self._swaps: list[tuple[bytes, bytes]] = []
        self._gen = exchange.generation_id.encode()
        upstream_model = exchange.model.config.upstream_name
        if upstream_model != exchange.model.id:
            self._swaps.append(
                (
                    b'"model":' + orjson.dumps(upstream_model),
                    b'"model":' + orjson.dumps(exchange.model.id),
                )
            )
        self._learned_id = False

    def feed(self, piece: bytes) -> bytes:
        if b"\r" in piece or self.buffer.endswith(b"\r"):
            piece = piece.replace(b"\r\n", b"\n")
        self.buffer += piece
        out: list[bytes] = []
        while not self.done:
            end = self.buffer.find(b"\n\n")
            if end < 0:
                break
            event, self.buffer = self.buffer[:end], self.buffer[end + 2 :]
            emitted = self._event(event)
            if emitted:
                out.append(emitted)
        if len(self.buffer) > MAX_EVENT_BYTES:
            raise ProviderStreamBroken("the provider sent an SSE event over 1 MiB")
        return b"".join(out)

    def _event(self, event: bytes) -> bytes | None:
        if not event.startswith(b"data:"):
            return event + b"\n\n" if event.strip() else None
        data = event[5:].strip()
        if data == b"[DONE]":
            self.done = True
            return None
        if not self._learned_id:
            self._learn(data)
        if b'"usage"' in data and self._hold_usage(data):
            return None
        if b'"choices"' in data and b'"choices":[]' not in data:
            self.content_chunks += 1
        if b'"finish_reason"' in data:
            found = _FINISH.search(data)
            if found:
                self.exchange.finish_reason = found.group(1).decode()
        for old, new in self._swaps:
            data = data.replace(old, new)
        return b"data: " + data + b"\n\n"

    def _learn(self, data: bytes) -> None:
        """From the first chunk: the provider's id (swapped for ours in every chunk) and object."""
        self._learned_id = True
        found = _ID.search(data)
        if found:
            self._swaps.insert(0, (b'"id":"' + found.group(1) + b'"', b'"id":"' + self._gen + b'"'))
        if b'"text_completion"' in data:
            self.object_name = "text_completion"

    def _hold_usage(self, data: bytes) -> bool:
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            return False
        if not isinstance(chunk, dict) or not isinstance(chunk.get("usage"), dict):
            return False
        tokens = parse_usage(chunk["usage"])
        if tokens is None:
            return False
        if chunk.get("choices"):
            self.content_chunks += 1
        self.usage_chunk, self.usage = chunk, tokens
        return True

    def charge(self) -> None:
        """What the account pays for this stream, from the provider's usage or our count."""
        if self.usage is not None:
            self.exchange.charge(self.usage, "provider")
        else:
            self.exchange.charge(
                TokenUsage(prompt=self.exchange.prompt_estimate, completion=self.content_chunks),
                "estimated",
            )

    def final_chunk(self) -> bytes:
        exchange = self.exchange
        assert exchange.usage is not None
        chunk = dict(self.usage_chunk or {})
        chunk.setdefault("object", self.object_name)
        chunk.setdefault("created", self.created)
        chunk.setdefault("choices", [])
        chunk["id"] = exchange.generation_id
        chunk["model"] = exchange.model.id
        chunk["provider"] = exchange.provider_name
        chunk["usage"] = usage_with_cost(chunk.get("usage"), exchange.usage, exchange.cost)
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    def error_chunk(self, message: str) -> bytes:
        chunk = {
            "id": self.exchange.generation_id,
            "object": self.object_name,
            "created": self.created,
            "model": self.exchange.model.id,
            "choices": [{"index": 0, "delta": {}, "finish_reason": "error"}],
            "error": {
                "code": 502,
                "message": message,
                "metadata": {
                    "error_type": "provider_error",
                    "provider_name": self.exchange.provider_name,
                },
            },
        }
        return b"data: " + orjson.dumps(chunk) + b"\n\n"


async def relay_stream(
    request: web.Request, upstream: aiohttp.ClientResponse, exchange: Exchange
) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    relay = SseRelay(exchange)
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

    failure: str | None = None
    try:
        async for piece in _pieces(
            upstream, settings.stream_keepalive_seconds, settings.upstream_read_timeout
        ):
            out = KEEPALIVE if piece is None else relay.feed(piece)
            if out:
                await response.write(out)
            if relay.done:
                break
    except ConnectionResetError:
        # The client is gone: stop the provider now and bill what it generated so far.
        _client_gone(upstream, exchange, relay)
        return response
    except asyncio.CancelledError:
        # The same, where the server cancels handlers of lost connections (handler_cancellation).
        _client_gone(upstream, exchange, relay)
        raise
    except (aiohttp.ClientError, TimeoutError, ProviderStreamBroken) as exc:
        failure = _describe(exc, exchange.provider_name)
        log.warning("stream %s: %s", exchange.generation_id, failure)
    finally:
        upstream.release()

    relay.charge()
    if failure is not None:
        exchange.finish_reason = "error"
    elif not relay.done:
        log.info("stream %s: provider closed without [DONE]", exchange.generation_id)
    await exchange.settle()
    try:
        if failure is not None:
            await response.write(relay.error_chunk(failure))
        await response.write(relay.final_chunk())
        await response.write(DONE)
        await response.write_eof()
    except ConnectionResetError:
        exchange.cancelled = True
    return response


def _client_gone(upstream: aiohttp.ClientResponse, exchange: Exchange, relay: SseRelay) -> None:
    upstream.close()
    exchange.cancelled = True
    exchange.finish_reason = exchange.finish_reason or "cancelled"
    relay.charge()


async def _pieces(upstream: aiohttp.ClientResponse, keepalive: float, read_timeout: float) -> "Any":
    """The provider's bytes as they come; None after each `keepalive` seconds of silence."""
    silent = 0.0
    while True:
        try:
            async with asyncio.timeout(keepalive):
                piece = await upstream.content.readany()
        except TimeoutError:
            silent += keepalive
            if silent >= read_timeout:
                raise TimeoutError("provider sent nothing within the read timeout") from None
            yield None
            continue
        if not piece:
            return
        silent = 0.0
        yield piece


def _describe(exc: BaseException, provider: str) -> str:
    if isinstance(exc, TimeoutError):
        return f"provider {provider} stopped sending (timeout)"
    if isinstance(exc, ProviderStreamBroken):
        return f"provider {provider} sent a malformed stream"
    return f"provider {provider} broke off the stream"
