"""The Responses API's stream: typed events (`event: response.output_text.delta` ...), relayed.

Each event's `delta` of output (text, refusal, reasoning, a call's arguments) is counted and goes
through the stream's redaction; text kept back in case it began a secret is sent, as one more
delta, before the event that closes that text (`...done`). The model in `response` objects
becomes the catalog's id. The last event (`response.completed`, `response.incomplete` or
`response.failed`) carries the usage: it is held back, settled, and sent last with `cost` in its
usage. When the provider's stream breaks off, or ends without one, the client gets a
`response.failed` that says so, with the usage charged and its cost.
"""

from typing import Any

import orjson

from gateway.proxy.relay.event_relay import EventRelay, sse_event, text_size
from gateway.proxy.relay.provider_usage import RESPONSES_USAGE, parse_usage
from gateway.proxy.relay.provider_usage import usage_with_cost as with_cost
from gateway.proxy.relay.redaction import Redactor
from gateway.proxy.settle.exchange import Exchange
from metering.pricing import TokenUsage

TERMINAL = frozenset(("response.completed", "response.incomplete", "response.failed"))
# Events whose `delta` is output, and the event that closes each one's text.
_DELTAS = {
    "response.output_text.delta": "response.output_text.done",
    "response.refusal.delta": "response.refusal.done",
    "response.function_call_arguments.delta": "response.function_call_arguments.done",
    "response.reasoning_text.delta": "response.reasoning_text.done",
    "response.reasoning_summary_text.delta": "response.reasoning_summary_text.done",
    "response.custom_tool_call_input.delta": "response.custom_tool_call_input.done",
}
_CLOSING = {done: delta for delta, done in _DELTAS.items()}
_REASONING = frozenset(("response.reasoning_text.delta", "response.reasoning_summary_text.delta"))
_INCOMPLETE = {"max_output_tokens": "length", "content_filter": "content_filter"}


def finish_of(response: dict[str, Any]) -> str | None:
    """A response's end in OpenRouter's words: stop, tool_calls, length, content_filter, error."""
    status = response.get("status")
    if status == "completed":
        output = response.get("output")
        calls = isinstance(output, list) and any(
            isinstance(item, dict) and item.get("type") == "function_call" for item in output
        )
        return "tool_calls" if calls else "stop"
    if status == "incomplete":
        details = response.get("incomplete_details")
        reason = details.get("reason") if isinstance(details, dict) else None
        return _INCOMPLETE.get(reason, "length") if isinstance(reason, str) else "length"
    if status in ("failed", "cancelled"):
        return "error"
    return None


def native_finish_of(response: dict[str, Any]) -> str | None:
    """The response's status, or for an incomplete one its reason (max_output_tokens...)."""
    status = response.get("status")
    details = response.get("incomplete_details")
    reason = details.get("reason") if isinstance(details, dict) else None
    if status == "incomplete" and isinstance(reason, str):
        return reason
    return status if isinstance(status, str) else None


def usage_with_cost(original: Any, tokens: TokenUsage, cost_nanos: int) -> dict[str, Any]:
    """The provider's usage object (or one made from what was charged) with `cost` in USD."""
    return with_cost(original, tokens, cost_nanos, names=RESPONSES_USAGE)


def parse_responses_usage(usage: Any) -> TokenUsage | None:
    return parse_usage(usage, names=RESPONSES_USAGE)


class ResponsesRelay(EventRelay):
    def __init__(self, exchange: Exchange, redactor: Redactor | None = None) -> None:
        super().__init__(exchange, redactor)
        self.terminal: dict[str, Any] | None = None
        self.sequence = 0  # the last sequence_number seen
        self.response: dict[str, Any] = {}  # the response as last described (created, ...)
        self.delta_events: dict[tuple[int, str], dict[str, Any]] = {}  # for kept-back text

    def _chunk(self, chunk: dict[str, Any], prefix: bytes) -> bytes | None:
        kind = chunk.get("type")
        number = chunk.get("sequence_number")
        if isinstance(number, int):
            self.sequence = max(self.sequence, number)
        response = chunk.get("response")
        if isinstance(response, dict):
            self.response = response
            if self.exchange.upstream_id is None and isinstance(response.get("id"), str):
                self.exchange.upstream_id = response["id"]
            if "model" in response:
                response["model"] = self.exchange.model.id
        if kind in TERMINAL and isinstance(response, dict):
            self.usage = parse_responses_usage(response.get("usage")) or self.usage
            self.exchange.finish_reason = finish_of(response)
            self.exchange.native_finish_reason = native_finish_of(response)
            self.terminal = chunk
            self.done = True
            return None
        before = b""
        if isinstance(kind, str):
            if kind in _DELTAS:
                self._delta(chunk, kind)
            elif kind in _CLOSING and self.texts is not None:
                before = self._release(chunk, _CLOSING[kind])
        return before + prefix + b"data: " + orjson.dumps(chunk) + b"\n\n"

    def _delta(self, chunk: dict[str, Any], kind: str) -> None:
        value = chunk.get("delta")
        self.produced(text_size(value))
        if kind in _REASONING and value:
            self.reasoning_shown = True
        if self.texts is not None and isinstance(value, str):
            index, name = self._key(chunk, kind)
            self.delta_events[(index, name)] = chunk
            chunk["delta"] = self.texts.text(index, name, value, False)

    def _key(self, chunk: dict[str, Any], kind: str) -> tuple[int, str]:
        index = chunk.get("output_index")
        part = chunk.get("content_index", chunk.get("summary_index", 0))
        return (index if isinstance(index, int) else 0), f"{kind}/{part}"

    def _release(self, chunk: dict[str, Any], delta_kind: str) -> bytes:
        """Before a text's closing event: what it kept back, as one more delta."""
        assert self.texts is not None
        index, name = self._key(chunk, delta_kind)
        return self._held_delta(index, name, self.texts.take(index, name))

    def _held_delta(self, index: int, name: str, text: str) -> bytes:
        template = self.delta_events.pop((index, name), None)
        if not text or template is None:
            return b""
        return sse_event({**template, "delta": text})

    def kept_back(self) -> bytes:
        if self.texts is None:
            return b""
        return b"".join(
            self._held_delta(index, name, text) for index, name, text in self.texts.rest()
        )

    def tail(self, failure: str | None) -> bytes:
        exchange = self.exchange
        assert exchange.usage is not None
        last = self.terminal
        if failure is not None or last is None:
            message = failure or "the provider ended the stream before the response was complete"
            response = {**self.response, "status": "failed"}
            response["error"] = {"code": "server_error", "message": message}
            last = {"type": "response.failed", "response": response}
        self.sequence += 1
        last["sequence_number"] = self.sequence
        response = last["response"]
        response["model"] = exchange.model.id
        response["usage"] = usage_with_cost(response.get("usage"), exchange.usage, exchange.cost)
        return self._out(self.kept_back() + sse_event(last))
