"""What the simulated provider's APIs share (simulated_provider.py, simulated_apis.py): its
words, its statistics, how it counts a prompt, and its errors on request."""

import math
from typing import Any

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
HOLD_WORDS = 120
TICK_WORDS = 3000
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
    "sim-hold": f"streams {HOLD_WORDS} words, one a second (streams held open: bench.open_streams)",
    "sim-tick-N": f"streams up to {TICK_WORDS} words, one every N ms (bench.open_streams --rate)",
    "sim-flood": f"streams {FLOOD_CHUNKS} chunks of 4 KB as fast as the reader takes them",
    "sim-trickle": "sends one byte every 50 ms, for up to ten minutes, then answers",
    "sim-empty": "answers no text: zero completion tokens and a null finish reason",
    "sim-errorchunk": "ends in an error: finish reason `error` (when streaming, after two words, "
    "with an `error` member)",
    "sim-cache": "Responses and Messages: reports part of the prompt read from (and, for "
    "Messages, written to) the provider's cache",
}
ERROR_AFTER_WORDS = 2
# Fields an OpenAI-style provider does not know, and refuses (as OpenAI does: "Unrecognized
# request argument supplied"): the gateway must keep its routing fields to itself.
FOREIGN_FIELDS = ("models", "provider", "route")
STATS = web.AppKey("stats", dict[str, int])
SLOW_SECONDS = web.AppKey("slow_seconds", float)


def count_prompt_tokens(body: dict[str, Any]) -> int:
    """About four characters a token, plus three per message: what real tokenizers roughly do.
    Anthropic's `system` counts too; the Responses API's input is counted in simulated_apis.py."""
    system = body.get("system")
    if isinstance(system, str) and isinstance(body.get("messages"), list):
        return math.ceil(len(system) / 4) + count_prompt_tokens({"messages": body["messages"]})
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


def tick_seconds(model: str) -> float | None:
    """`sim-tick-N`'s pace: one event every N ms."""
    ms = model.removeprefix("sim-tick-")
    return int(ms) / 1000 if ms != model and ms.isdigit() and 0 < int(ms) <= 60_000 else None


def words_for(model: str, max_tokens: int | None) -> list[str]:
    if model == "sim-flood":
        return [FLOOD_PIECE] * FLOOD_CHUNKS  # whatever max_tokens said
    if model == "sim-empty":
        return []
    if model == "sim-errorchunk":
        return REPLY[:ERROR_AFTER_WORDS]
    if model == "sim-hold":
        return (REPLY * 8)[: min(max_tokens or HOLD_WORDS, HOLD_WORDS)]
    if tick_seconds(model) is not None:
        return (REPLY * 200)[: min(max_tokens or TICK_WORDS, TICK_WORDS)]
    words = REPLY * 40 if model == "sim-slowstream" else REPLY
    words = words[:LONG_REPLY_WORDS]
    return words[:max_tokens] if max_tokens else words


def unknown_argument(body: dict[str, Any]) -> web.Response | None:
    """The 400 OpenAI answers a field it does not know with (the gateway's routing fields)."""
    foreign = [name for name in FOREIGN_FIELDS if name in body]
    if not foreign:
        return None
    message = f"Unrecognized request argument supplied: {foreign[0]}"
    return web.json_response({"error": {"message": message}}, status=400)


def simulated_error(model: str) -> web.Response | None:
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
