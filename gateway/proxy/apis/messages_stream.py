"""Anthropic's Messages stream, relayed: `message_start`, content blocks, `message_delta`,
`message_stop`.

`message_start` carries the message's id and model (they become the generation id and the
catalog id) and the input's usage (`input_tokens`, `cache_creation_input_tokens`,
`cache_read_input_tokens`): known from the start, so even a stream cut off before its end is
charged the provider's own prompt count. Each `content_block_delta` of output (text, thinking, a
tool's JSON) is counted and goes through the stream's redaction; text kept back in case it began
a secret is sent, as one more delta, before its `content_block_stop`. `message_delta` carries the
output's usage (counts in it are cumulative) and the stop reason: it and `message_stop` are held
back, settled, and sent last with `cost` in the usage. A stream that breaks off gets an `error`
event after the usage, as Anthropic sends one.
"""

from typing import Any

import orjson

from gateway.proxy.relay.event_relay import EventRelay, sse_event, text_size
from gateway.proxy.relay.provider_usage import token_count
from gateway.proxy.relay.redaction import Redactor
from gateway.proxy.settle.exchange import Exchange
from metering.money import nanos_to_number
from metering.pricing import TokenUsage

# Delta types that carry output, and where their output is.
_OUTPUT = {"text_delta": "text", "input_json_delta": "partial_json", "thinking_delta": "thinking"}
_STOPS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
_COUNTS = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")


def finish_of(stop_reason: Any) -> str | None:
    return _STOPS.get(stop_reason, "stop") if isinstance(stop_reason, str) else None


def parse_messages_usage(usage: Any, start: dict[str, Any] | None = None) -> TokenUsage | None:
    """Anthropic's usage (the input counts from `start` where `usage` has none): its
    `input_tokens` leave out the cache's, which are part of our prompt."""
    if not isinstance(usage, dict):
        return None
    merged = {**(start or {}), **{k: v for k, v in usage.items() if v is not None}}
    counts = [token_count(merged.get(name, 0)) for name in (*_COUNTS, "output_tokens")]
    plain, written, read, output = counts
    if plain is None or written is None or read is None or output is None:
        return None
    return TokenUsage(
        prompt=plain + written + read, completion=output, cached=read, cache_write=written
    )


def usage_with_cost(original: Any, tokens: TokenUsage, cost_nanos: int) -> dict[str, Any]:
    usage: dict[str, Any] = dict(original) if isinstance(original, dict) else {}
    usage.setdefault("input_tokens", tokens.prompt - tokens.cached - tokens.cache_write)
    usage.setdefault("cache_creation_input_tokens", tokens.cache_write)
    usage.setdefault("cache_read_input_tokens", tokens.cached)
    usage.setdefault("output_tokens", tokens.completion)
    usage["cost"] = nanos_to_number(cost_nanos)
    return usage


class MessagesRelay(EventRelay):
    def __init__(self, exchange: Exchange, redactor: Redactor | None = None) -> None:
        super().__init__(exchange, redactor)
        self.start_usage: dict[str, Any] | None = None
        self.last_delta: dict[str, Any] | None = None  # message_delta, held back
        self.delta_events: dict[int, dict[str, Any]] = {}  # for kept-back text

    def _chunk(self, chunk: dict[str, Any], prefix: bytes) -> bytes | None:
        kind = chunk.get("type")
        if kind == "message_start":
            self._start(chunk)
        elif kind == "content_block_delta":
            self._delta(chunk)
        elif kind == "content_block_stop" and self.texts is not None:
            index = chunk.get("index")
            if isinstance(index, int):
                held = self._held_delta(index, self.texts.take(index, "text"))
                return held + prefix + b"data: " + orjson.dumps(chunk) + b"\n\n"
        elif kind == "message_delta":
            self.last_delta = chunk
            delta = chunk.get("delta")
            if isinstance(delta, dict):
                reason = delta.get("stop_reason")
                self.exchange.finish_reason = finish_of(reason)
                self.exchange.native_finish_reason = reason if isinstance(reason, str) else None
            self.usage = parse_messages_usage(chunk.get("usage"), self.start_usage) or self.usage
            return None
        elif kind == "message_stop":
            self.done = True  # sent by tail(), after the usage
            return None
        elif kind == "error":
            self.exchange.finish_reason = "error"
        return prefix + b"data: " + orjson.dumps(chunk) + b"\n\n"

    def _start(self, chunk: dict[str, Any]) -> None:
        message = chunk.get("message")
        if not isinstance(message, dict):
            return
        if isinstance(message.get("id"), str):
            self.exchange.upstream_id = message["id"]
        message["id"] = self.exchange.generation_id
        message["model"] = self.exchange.model.id
        usage = message.get("usage")
        if isinstance(usage, dict):
            self.start_usage = {k: usage[k] for k in _COUNTS if k in usage}
            told = parse_messages_usage({"output_tokens": 0}, self.start_usage)
            self.prompt_reported = told if told is not None and told.prompt else None

    def _delta(self, chunk: dict[str, Any]) -> None:
        delta = chunk.get("delta")
        field = _OUTPUT.get(str(delta.get("type"))) if isinstance(delta, dict) else None
        if delta is None or field is None:
            return
        value = delta.get(field)
        self.produced(text_size(value))
        if field == "thinking" and value:
            self.reasoning_shown = True
        index = chunk.get("index")
        if self.texts is not None and isinstance(value, str) and isinstance(index, int):
            self.delta_events[index] = chunk
            delta[field] = self.texts.text(index, "text", value, False)

    def _held_delta(self, index: int, text: str) -> bytes:
        template = self.delta_events.pop(index, None)
        delta = template.get("delta") if template is not None else None
        if not text or template is None or not isinstance(delta, dict):
            return b""
        field = _OUTPUT.get(str(delta.get("type")), "text")
        return sse_event({**template, "delta": {**delta, field: text}})

    def kept_back(self) -> bytes:
        if self.texts is None:
            return b""
        return b"".join(self._held_delta(index, text) for index, _, text in self.texts.rest())

    def tail(self, failure: str | None) -> bytes:
        exchange = self.exchange
        assert exchange.usage is not None
        last = self.last_delta or {
            "type": "message_delta",
            "delta": {"stop_reason": None, "stop_sequence": None},
        }
        last["usage"] = usage_with_cost(last.get("usage"), exchange.usage, exchange.cost)
        out = self.kept_back() + sse_event(last)
        if failure is not None:
            error = {"type": "error", "error": {"type": "api_error", "message": failure}}
            return self._out(out + sse_event(error))
        return self._out(out + sse_event({"type": "message_stop"}))
