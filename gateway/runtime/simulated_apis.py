"""The simulated provider's OpenAI Responses API and Anthropic Messages API (the rest of it is in
simulated_provider.py), streaming or not, with their own usage shapes and errors.

Responses keeps the ids it answered (when `store` is not false), as OpenAI does, and refuses a
`previous_response_id` it does not know. Messages wants its key as `x-api-key` and an
`anthropic-version` header, as Anthropic does; it counts what it was sent of both. sim-error-NNN,
sim-slowstream, sim-nousage, sim-errorchunk and sim-cache behave as BEHAVIOURS says.
"""

import asyncio
import math
import time
from typing import Any

import orjson
from aiohttp import web

from gateway.runtime.simulated_basics import (
    SLOW_SECONDS,
    STATS,
    count_prompt_tokens,
    simulated_error,
    unknown_argument,
    words_for,
)

STORED = web.AppKey("stored_responses", dict[str, float])
SEEN = web.AppKey("seen_headers", dict[str, str])
MAX_STORED = 10_000
CACHE_READ = 100  # sim-cache: prompt tokens read from the cache (Responses and Messages)
CACHE_WRITTEN = 50  # sim-cache: prompt tokens written to it (Messages)


async def _begin(request: web.Request) -> tuple[dict[str, Any], str]:
    stats = request.app[STATS]
    stats["requests"] += 1
    body = orjson.loads(await request.read())
    model = str(body.get("model", ""))
    if model == "sim-slow":
        await asyncio.sleep(request.app[SLOW_SECONDS])
    return body, model


async def seen(request: web.Request) -> web.Response:
    """What the last requests carried that the tests check: headers, `previous_response_id`."""
    return web.json_response(request.app[SEEN])


def _event(kind: str, data: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


# --- OpenAI's Responses API --------------------------------------------------------------------


def _input_tokens(body: dict[str, Any]) -> int:
    chars = 0
    for value in (body.get("input"), body.get("instructions")):
        if isinstance(value, str):
            chars += len(value)
        elif isinstance(value, list):
            chars += len(orjson.dumps(value))
    return max(math.ceil(chars / 4), 1)


async def responses(request: web.Request) -> web.StreamResponse:
    body, model = await _begin(request)
    refused = unknown_argument(body) or simulated_error(model)
    if refused is not None:
        return refused
    stored = request.app[STORED]
    previous = body.get("previous_response_id")
    request.app[SEEN]["previous_response_id"] = str(previous or "")
    if previous is not None and (not isinstance(previous, str) or previous not in stored):
        message = f"Previous response with id '{previous}' not found."
        error = {"message": message, "type": "invalid_request_error", "param": "previous"}
        return web.json_response({"error": error}, status=400)
    limit = body.get("max_output_tokens")
    request.app[STATS]["last_max_tokens"] = limit if isinstance(limit, int) else -1
    words = words_for(model, limit if isinstance(limit, int) else None)
    ident = f"resp_sim{time.monotonic_ns()}"
    if body.get("store", True) is not False:
        if len(stored) >= MAX_STORED:
            stored.pop(next(iter(stored)))
        stored[ident] = time.time()
    cut = isinstance(limit, int) and limit < len(words_for(model, None))
    text = " ".join(words)
    prompt = _input_tokens(body)
    usage = {
        "input_tokens": prompt,
        "input_tokens_details": {
            "cached_tokens": min(CACHE_READ, prompt) if model == "sim-cache" else 0
        },
        "output_tokens": len(words),
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + len(words),
    }
    response = _response(ident, model, body, "incomplete" if cut else "completed")
    if body.get("stream"):
        return await _stream_response(request, response, words, usage, model)
    response["output"] = [_message_item(ident, text)]
    if model != "sim-nousage":
        response["usage"] = usage
    return web.Response(body=orjson.dumps(response), content_type="application/json")


def _cached(model: str, prompt: int) -> int:
    return min(CACHE_READ, prompt) if model == "sim-cache" else 0


def _response(ident: str, model: str, body: dict[str, Any], status: str) -> dict[str, Any]:
    return {
        "id": ident,
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "error": None,
        "model": model,
        "output": [],
        "previous_response_id": body.get("previous_response_id"),
        "store": body.get("store", True) is not False,
        "max_output_tokens": body.get("max_output_tokens"),
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": None,
    }


def _message_item(ident: str, text: str, status: str = "completed") -> dict[str, Any]:
    part = {"type": "output_text", "text": text, "annotations": []}
    return {
        "type": "message",
        "id": f"msg_{ident}",
        "status": status,
        "role": "assistant",
        "content": [part] if status == "completed" else [],
    }


async def _stream_response(
    request: web.Request,
    response: dict[str, Any],
    words: list[str],
    usage: dict[str, Any],
    model: str,
) -> web.StreamResponse:
    out = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await out.prepare(request)
    number = 0

    async def send(kind: str, **fields: Any) -> None:
        nonlocal number
        await out.write(_event(kind, {"type": kind, "sequence_number": number, **fields}))
        number += 1

    final_status = response["status"]
    item_id = f"msg_{response['id']}"
    place = {"item_id": item_id, "output_index": 0, "content_index": 0}
    await send("response.created", response={**response, "status": "in_progress"})
    await send("response.in_progress", response={**response, "status": "in_progress"})
    await send(
        "response.output_item.added",
        output_index=0,
        item=_message_item(response["id"], "", "in_progress"),
    )
    await send("response.content_part.added", **place, part={"type": "output_text", "text": ""})
    delay = 0.02 if model == "sim-slowstream" else 0.0
    for i, word in enumerate(words):
        await send("response.output_text.delta", **place, delta=word if i == 0 else " " + word)
        if delay:
            await asyncio.sleep(delay)
    if model == "sim-errorchunk":
        failed = {
            **response,
            "status": "failed",
            "error": {"code": "server_error", "message": "simulated: the model failed mid stream"},
        }
        failed["usage"] = usage
        await send("response.failed", response=failed)
        await out.write_eof()
        return out
    text = " ".join(words)
    await send("response.output_text.done", **place, text=text)
    item = _message_item(response["id"], text)
    await send("response.content_part.done", **place, part=item["content"][0])
    await send("response.output_item.done", output_index=0, item=item)
    done = {**response, "status": final_status, "output": [item]}
    if model != "sim-nousage":
        done["usage"] = usage
    kind = "response.completed" if final_status == "completed" else "response.incomplete"
    await send(kind, response=done)
    await out.write_eof()
    return out


# --- Anthropic's Messages API ------------------------------------------------------------------


def _anthropic_error(status: int, kind: str, message: str) -> web.Response:
    body = {"type": "error", "error": {"type": kind, "message": message}}
    return web.json_response(body, status=status)


async def messages(request: web.Request) -> web.StreamResponse:
    stats, seen = request.app[STATS], request.app[SEEN]
    if request.headers.get("x-api-key"):
        stats["x_api_key"] += 1
    if request.headers.get("Authorization"):
        stats["bearer_on_messages"] += 1
    seen["anthropic-version"] = request.headers.get("anthropic-version", "")
    seen["anthropic-beta"] = request.headers.get("anthropic-beta", "")
    body, model = await _begin(request)
    if not seen["anthropic-version"]:
        return _anthropic_error(
            400, "invalid_request_error", "anthropic-version: header is required"
        )
    failure = simulated_error(model)
    if failure is not None:
        said = orjson.loads(failure.body)["error"]["message"]  # type: ignore[arg-type]
        return _anthropic_error(failure.status, "api_error", said)
    limit = body.get("max_tokens")
    stats["last_max_tokens"] = limit if isinstance(limit, int) else -1
    words = words_for(model, limit if isinstance(limit, int) else None)
    cut = isinstance(limit, int) and limit < len(words_for(model, None))
    cached = model == "sim-cache"
    usage = {
        "input_tokens": count_prompt_tokens(body),
        "cache_creation_input_tokens": CACHE_WRITTEN if cached else 0,
        "cache_read_input_tokens": CACHE_READ if cached else 0,
        "output_tokens": len(words),
    }
    message: dict[str, Any] = {
        "id": f"msg_sim{time.monotonic_ns()}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {**usage, "output_tokens": 1},
    }
    stop = "max_tokens" if cut else "end_turn"
    if body.get("stream"):
        return await _stream_message(request, message, words, usage, stop, model)
    message["content"] = [{"type": "text", "text": " ".join(words)}]
    message["stop_reason"] = stop
    message["usage"] = usage
    if model == "sim-nousage":
        del message["usage"]
    return web.Response(body=orjson.dumps(message), content_type="application/json")


async def _stream_message(
    request: web.Request,
    message: dict[str, Any],
    words: list[str],
    usage: dict[str, Any],
    stop: str,
    model: str,
) -> web.StreamResponse:
    out = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await out.prepare(request)

    async def send(kind: str, **fields: Any) -> None:
        await out.write(_event(kind, {"type": kind, **fields}))

    await send("message_start", message=message)
    await send("content_block_start", index=0, content_block={"type": "text", "text": ""})
    await send("ping")
    delay = 0.02 if model == "sim-slowstream" else 0.0
    for i, word in enumerate(words):
        piece = {"type": "text_delta", "text": word if i == 0 else " " + word}
        await send("content_block_delta", index=0, delta=piece)
        if delay:
            await asyncio.sleep(delay)
    if model == "sim-errorchunk":
        error = {"type": "overloaded_error", "message": "simulated: the model failed mid stream"}
        await send("error", error=error)
        await out.write_eof()
        return out
    await send("content_block_stop", index=0)
    delta: dict[str, Any] = {"stop_reason": stop, "stop_sequence": None}
    final: dict[str, Any] = {} if model == "sim-nousage" else {"output_tokens": len(words)}
    await send("message_delta", delta=delta, usage=final)
    await send("message_stop")
    await out.write_eof()
    return out
