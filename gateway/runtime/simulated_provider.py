"""A simulated OpenAI-style provider on loopback, for `gateway demo`, the tests and the benchmark.

It answers /v1/chat/completions, /v1/completions and /v1/embeddings here, and OpenAI's Responses
API and Anthropic's Messages API in simulated_apis.py, streaming or not, with usage, and
misbehaves on request: the upstream model name picks the behaviour (simulated_basics.py,
BEHAVIOURS). It is named as simulated everywhere it shows, and its replies say so.
"""

import asyncio
import base64
import math
import struct
import time
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from gateway.runtime import simulated_apis
from gateway.runtime.simulated_basics import (
    SLOW_SECONDS,
    STATS,
    TRICKLE_BYTES,
    count_prompt_tokens,
    simulated_error,
    tick_seconds,
    unknown_argument,
    words_for,
)


def _usage(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


async def _completion(request: web.Request) -> web.StreamResponse:
    chat = request.path.endswith("/chat/completions")
    stats = request.app[STATS]
    stats["requests"] += 1
    if request.headers.get("Authorization", "").startswith("Bearer "):
        stats["with_key"] += 1
    body = orjson.loads(await request.read())
    refused = unknown_argument(body)
    if refused is not None:
        return refused
    model = str(body.get("model", ""))
    if model == "sim-slow":
        await asyncio.sleep(request.app[SLOW_SECONDS])
    elif model == "sim-delay":
        await asyncio.sleep(0.05)
    failure = simulated_error(model)
    if failure is not None:
        return failure
    if model == "sim-trickle":
        return await _trickle(request, bool(body.get("stream")))
    if model == "sim-drop" and not body.get("stream"):
        assert request.transport is not None
        request.transport.abort()
        return web.Response()
    max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
    stats["last_max_tokens"] = max_tokens if isinstance(max_tokens, int) else -1
    words = words_for(model, max_tokens if isinstance(max_tokens, int) else None)
    prompt_tokens = count_prompt_tokens(body) + (10_000 if model == "sim-overuse" else 0)
    ident = f"simcmpl-{time.monotonic_ns()}"
    if body.get("stream"):
        return await _stream(request, body, model, words, prompt_tokens, ident, chat)
    if model == "sim-garbage":
        return web.Response(body=b"{not json", content_type="application/json")
    text = " ".join(words)
    cut = isinstance(max_tokens, int) and max_tokens < len(words_for(model, None))
    choice: dict[str, Any] = {"index": 0, "finish_reason": _finish_reason(model, cut)}
    if chat:
        choice["message"] = {"role": "assistant", "content": text}
    else:
        choice["text"] = text
    reply: dict[str, Any] = {
        "id": ident,
        "object": "chat.completion" if chat else "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
    }
    if model != "sim-nousage":
        reply["usage"] = _usage(prompt_tokens, len(words))
    return web.Response(body=orjson.dumps(reply), content_type="application/json")


async def _stream(
    request: web.Request,
    body: dict[str, Any],
    model: str,
    words: list[str],
    prompt_tokens: int,
    ident: str,
    chat: bool,
) -> web.StreamResponse:
    stats = request.app[STATS]
    stats["streams_started"] += 1
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    created = int(time.time())
    obj = "chat.completion.chunk" if chat else "text_completion"

    def chunk(choices: list[dict[str, Any]], usage: Any = None) -> bytes:
        data = {
            "id": ident,
            "object": obj,
            "created": created,
            "model": model,
            "choices": choices,
            "usage": usage,
        }
        return b"data: " + orjson.dumps(data) + b"\n\n"

    delay = {"sim-slowstream": 0.02, "sim-hold": 1.0}.get(model, tick_seconds(model) or 0.0)
    try:
        for i, word in enumerate(words):
            piece = word if i == 0 else " " + word
            part = (
                {"index": 0, "delta": {"content": piece}} if chat else {"index": 0, "text": piece}
            )
            part["finish_reason"] = None
            await response.write(chunk([part]))
            stats["chunks_sent"] += 1
            if model == "sim-drop" and i == 1:
                assert request.transport is not None
                request.transport.abort()
                stats["streams_dropped"] += 1
                return response
            if model == "sim-garbage" and i == 1:
                await response.write(b"data: {broken\n\n")
            if delay:
                await asyncio.sleep(delay)
        await response.write(_last_chunk(chunk, model, chat))
        options = body.get("stream_options") or {}
        if options.get("include_usage") and model != "sim-nousage":
            await response.write(chunk([], _usage(prompt_tokens, len(words))))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        stats["streams_completed"] += 1
    except (ConnectionError, asyncio.CancelledError):  # reset, or lost while draining
        stats["streams_aborted"] += 1
        raise
    return response


def _last_chunk(chunk: Callable[[list[dict[str, Any]]], bytes], model: str, chat: bool) -> bytes:
    """The chunk with the finish reason; sim-errorchunk's carries an `error` member, as
    OpenRouter sends a provider's error mid stream."""
    done: dict[str, Any] = {"index": 0, "finish_reason": _finish_reason(model, False)}
    done["delta" if chat else "text"] = {} if chat else ""
    last = chunk([done])
    if model == "sim-errorchunk":
        error = {"message": "simulated: the model failed mid stream", "code": 502}
        last = last[:-3] + b',"error":' + orjson.dumps(error) + b"}\n\n"
    return last


def _finish_reason(model: str, cut: bool) -> str | None:
    if model == "sim-empty":
        return None
    if model == "sim-errorchunk":
        return "error"
    return "length" if cut else "stop"


async def _trickle(request: web.Request, stream: bool) -> web.StreamResponse:
    """A provider that never quite stops: one byte at a time, each well within a read timeout."""
    content_type = "text/event-stream" if stream else "application/json"
    response = web.StreamResponse(headers={"Content-Type": content_type})
    await response.prepare(request)
    for _ in range(TRICKLE_BYTES):
        await response.write(b":" if stream else b" ")
        await asyncio.sleep(0.05)
    await response.write(b"\n\n" if stream else b"{}")
    await response.write_eof()
    return response


EMBEDDING_SIZE = 8


async def _embeddings(request: web.Request) -> web.Response:
    """OpenAI's embeddings: a small made-up vector per input, usage in prompt tokens (about four
    characters a token of text, one a token id); `encoding_format: "base64"` as OpenAI sends it
    (little-endian float32). sim-error-NNN and sim-nousage behave as for completions."""
    request.app[STATS]["requests"] += 1
    body = orjson.loads(await request.read())
    refused = unknown_argument(body)
    if refused is not None:
        return refused
    model = str(body.get("model", ""))
    failure = simulated_error(model)
    if failure is not None:
        return failure
    value = body.get("input")
    items = (
        value if isinstance(value, list) and not all(isinstance(v, int) for v in value) else [value]
    )
    tokens = sum(
        math.ceil(len(item) / 4) if isinstance(item, str) else len(item or []) for item in items
    )
    data = []
    for index, item in enumerate(items):
        vector = [round(math.sin(len(str(item)) + i), 6) for i in range(EMBEDDING_SIZE)]
        packed: Any = vector
        if body.get("encoding_format") == "base64":
            packed = base64.b64encode(struct.pack(f"<{EMBEDDING_SIZE}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": packed})
    reply: dict[str, Any] = {"object": "list", "data": data, "model": model}
    if model != "sim-nousage":
        reply["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
    return web.Response(body=orjson.dumps(reply), content_type="application/json")


async def _stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATS])


def create_simulated_provider(slow_seconds: float = 2.0) -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[STATS] = {
        "requests": 0,
        "with_key": 0,
        "last_max_tokens": 0,
        "streams_started": 0,
        "streams_completed": 0,
        "streams_aborted": 0,
        "streams_dropped": 0,
        "chunks_sent": 0,
        "x_api_key": 0,
        "bearer_on_messages": 0,
    }
    app[simulated_apis.STORED] = {}
    app[simulated_apis.SEEN] = {}
    app[SLOW_SECONDS] = slow_seconds
    for prefix in ("/v1", ""):
        app.router.add_post(f"{prefix}/chat/completions", _completion)
        app.router.add_post(f"{prefix}/completions", _completion)
        app.router.add_post(f"{prefix}/embeddings", _embeddings)
        app.router.add_post(f"{prefix}/responses", simulated_apis.responses)
        app.router.add_post(f"{prefix}/messages", simulated_apis.messages)
    app.router.add_get("/_sim/stats", _stats)
    app.router.add_get("/_sim/seen", simulated_apis.seen)
    return app
