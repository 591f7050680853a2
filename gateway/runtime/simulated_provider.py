"""A simulated OpenAI-style provider on loopback, for `gateway demo`, the tests and the benchmark.

It answers /v1/chat/completions and /v1/completions, streaming or not, with usage, and misbehaves
on request: the upstream model name picks the behaviour (see BEHAVIOURS). It is named as simulated
everywhere it shows, and its replies say so.
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

REPLY = [
    "This",
    "is",
    "a",
    "simulated",
    "reply",
    "from",
    "the",
    "gateway's",
    "built-in",
    "test",
    "provider;",
    "no",
    "real",
    "model",
    "was",
    "called.",
]
LONG_REPLY_WORDS = 400
FLOOD_CHUNKS = 50_000
FLOOD_PIECE = "flood " * 680
TRICKLE_BYTES = 12_000
BEHAVIOURS = {
    "sim-slow": "waits `slow_seconds` before answering",
    "sim-delay": "waits 50 ms before answering (for races)",
    "sim-error-NNN": "answers status NNN with an error body (e.g. sim-error-500; a 429 says "
    "Retry-After: 2)",
    "sim-garbage": "answers 200 with a body that is not JSON (a broken SSE event when streaming)",
    "sim-drop": "drops the connection (after two chunks when streaming)",
    "sim-nousage": "never reports usage",
    "sim-overuse": "reports 10,000 more prompt tokens than it was sent (a hidden system prompt)",
    "sim-slowstream": f"streams {LONG_REPLY_WORDS} words, one every 20 ms",
    "sim-flood": f"streams {FLOOD_CHUNKS} chunks of 4 KB as fast as the reader takes them",
    "sim-trickle": "sends one byte every 50 ms, for up to ten minutes, then answers",
    "sim-empty": "answers no text: zero completion tokens and a null finish reason",
    "sim-errorchunk": "ends in an error: finish reason `error` (when streaming, after two words, "
    "with an `error` member)",
}
ERROR_AFTER_WORDS = 2
# Fields an OpenAI-style provider does not know, and refuses (as OpenAI does: "Unrecognized
# request argument supplied"): the gateway must keep its routing fields to itself.
FOREIGN_FIELDS = ("models", "provider", "route")
STATS = web.AppKey("stats", dict[str, int])
SLOW_SECONDS = web.AppKey("slow_seconds", float)


def count_prompt_tokens(body: dict[str, Any]) -> int:
    """About four characters a token, plus three per message: what real tokenizers roughly do."""
    if isinstance(body.get("messages"), list):
        chars = 0
        for m in body["messages"]:
            content = m.get("content") if isinstance(m, dict) else None
            if isinstance(content, str):
                chars += len(content)
            elif isinstance(content, list):
                texts = (p.get("text") for p in content if isinstance(p, dict))
                chars += sum(len(text) for text in texts if isinstance(text, str))
        return math.ceil(chars / 4) + 3 * len(body["messages"])
    prompt = body.get("prompt")
    return math.ceil(len(prompt) / 4) if isinstance(prompt, str) else 1


def _words(model: str, max_tokens: int | None) -> list[str]:
    if model == "sim-flood":
        return [FLOOD_PIECE] * FLOOD_CHUNKS  # whatever max_tokens said
    if model == "sim-empty":
        return []
    if model == "sim-errorchunk":
        return REPLY[:ERROR_AFTER_WORDS]
    words = REPLY * 40 if model == "sim-slowstream" else REPLY
    words = words[:LONG_REPLY_WORDS]
    return words[:max_tokens] if max_tokens else words


def _usage(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


def _unknown_argument(body: dict[str, Any]) -> web.Response | None:
    """The 400 OpenAI answers a field it does not know with (the gateway's routing fields)."""
    foreign = [name for name in FOREIGN_FIELDS if name in body]
    if not foreign:
        return None
    message = f"Unrecognized request argument supplied: {foreign[0]}"
    return web.json_response({"error": {"message": message}}, status=400)


def _simulated_error(model: str) -> web.Response | None:
    """sim-error-NNN's answer: status NNN with an error body (a 400 says the context is too
    small, a 429 carries Retry-After as providers send it)."""
    if not (model.startswith("sim-error-") and model[10:].isdigit()):
        return None
    status = int(model[10:])
    message = (
        "simulated: this model's context is too small"
        if status == 400
        else f"simulated error {status}"
    )
    headers = {"Retry-After": "2"} if status == 429 else None
    return web.json_response({"error": {"message": message}}, status=status, headers=headers)


async def _completion(request: web.Request) -> web.StreamResponse:
    chat = request.path.endswith("/chat/completions")
    stats = request.app[STATS]
    stats["requests"] += 1
    if request.headers.get("Authorization", "").startswith("Bearer "):
        stats["with_key"] += 1
    body = orjson.loads(await request.read())
    refused = _unknown_argument(body)
    if refused is not None:
        return refused
    model = str(body.get("model", ""))
    if model == "sim-slow":
        await asyncio.sleep(request.app[SLOW_SECONDS])
    elif model == "sim-delay":
        await asyncio.sleep(0.05)
    failure = _simulated_error(model)
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
    words = _words(model, max_tokens if isinstance(max_tokens, int) else None)
    prompt_tokens = count_prompt_tokens(body) + (10_000 if model == "sim-overuse" else 0)
    ident = f"simcmpl-{time.monotonic_ns()}"
    if body.get("stream"):
        return await _stream(request, body, model, words, prompt_tokens, ident, chat)
    if model == "sim-garbage":
        return web.Response(body=b"{not json", content_type="application/json")
    text = " ".join(words)
    cut = isinstance(max_tokens, int) and max_tokens < len(_words(model, None))
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

    delay = 0.02 if model == "sim-slowstream" else 0.0
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
    refused = _unknown_argument(body)
    if refused is not None:
        return refused
    model = str(body.get("model", ""))
    failure = _simulated_error(model)
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
    }
    app[SLOW_SECONDS] = slow_seconds
    for prefix in ("/v1", ""):
        app.router.add_post(f"{prefix}/chat/completions", _completion)
        app.router.add_post(f"{prefix}/completions", _completion)
        app.router.add_post(f"{prefix}/embeddings", _embeddings)
    app.router.add_get("/_sim/stats", _stats)
    return app
