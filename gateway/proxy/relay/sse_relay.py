"""The chat and completions stream: OpenAI's chunks, relayed one event at a time.

The framing, redaction and charging are shared (event_relay.py). Here: the top-level `id` and
`model` become the generation id and the catalog id, content chunks are counted, `finish_reason`
is noted, and the chunk that carries `usage` is held back so that it can be sent last with `cost`
added, just before `data: [DONE]`.
"""

import time
from typing import Any

import orjson

from gateway.proxy.relay.event_relay import EventRelay, text_size
from gateway.proxy.relay.provider_usage import parse_usage, usage_with_cost
from gateway.proxy.relay.redaction import Redactor
from gateway.proxy.relay.text_template import TextTemplate, make_template, plain_text
from gateway.proxy.settle.exchange import Exchange

DONE = b"data: [DONE]\n\n"
# Delta fields that carry generated output (a role alone does not).
_OUTPUT_FIELDS = (
    "content",
    "tool_calls",
    "function_call",
    "reasoning",
    "reasoning_content",
    "refusal",
    "audio",
)
_OUTPUT_SET = frozenset(_OUTPUT_FIELDS)
_REASONING_FIELDS = frozenset(("reasoning", "reasoning_content"))


class SseRelay(EventRelay):
    def __init__(self, exchange: Exchange, redactor: Redactor | None = None) -> None:
        super().__init__(exchange, redactor)
        self.usage_chunk: dict[str, Any] | None = None
        self.object_name = "chat.completion.chunk"
        self.created = int(time.time())
        self.template: TextTemplate | None = None

    def _chunk(self, chunk: dict[str, Any], prefix: bytes) -> bytes | None:
        shape = plain_text(chunk) if not prefix else None  # before the walk redacts it
        self._note(chunk)
        usage = chunk.get("usage")
        tokens = parse_usage(usage) if isinstance(usage, dict) else None
        if tokens is not None:
            self.usage_chunk, self.usage = chunk, tokens
            return None
        self._swap(chunk)
        out = orjson.dumps(chunk)
        if shape is not None:
            field, index, text = shape
            choice = chunk["choices"][0]
            sent = choice["text"] if field == "text" else choice["delta"]["content"]
            self.template = make_template(self.data, out, field, index, text, sent)
        return prefix + b"data: " + out + b"\n\n"

    def _like_the_last(self, data: bytes) -> bytes | None:
        """An event like the last plain one but for its text: relayed by the template."""
        template = self.template
        found = template.text_of(data) if template is not None else None
        if found is None:
            return None
        assert template is not None
        raw, text = found
        if text:
            self.produced(len(text))
            if self.texts is not None:
                sent = self.texts.text(template.index, template.field, text, False)
                if sent != text:
                    raw = orjson.dumps(sent)[1:-1]
        return template.event(raw)

    def _note(self, chunk: dict[str, Any]) -> None:
        """Count the chunk's output and note its finish reason; its streamed texts go through
        the stream's redaction on the same walk (one walk an event: this is the hot path)."""
        if chunk.get("object") == "text_completion":
            self.object_name = "text_completion"
        choices = chunk.get("choices")
        if not isinstance(choices, list):
            return
        texts = self.texts
        produced = 0
        for position, choice in enumerate(choices):
            if not isinstance(choice, dict):
                continue
            reason = choice.get("finish_reason")
            if isinstance(reason, str):
                self.exchange.finish_reason = reason
            final = reason is not None
            index = choice.get("index", position) if texts is not None else position
            if not isinstance(index, int):
                index = position
            if "text" in choice:
                text = choice["text"]
                produced += text_size(text)
                if texts is not None and isinstance(text, str):
                    choice["text"] = texts.text(index, "text", text, final)
            delta = choice.get("delta")
            if isinstance(delta, dict):
                for field, value in delta.items():  # a field or two: cheaper than a lookup each
                    if not value or field not in _OUTPUT_SET:
                        continue
                    produced += text_size(value)
                    if field in _REASONING_FIELDS:
                        self.reasoning_shown = True
                    if texts is not None:  # a value replaced in place: the dict keeps its size
                        texts.field(delta, field, value, index, final)
            if final and texts is not None:
                texts.finish(choice, index)
        self.produced(produced)

    def _swap(self, chunk: dict[str, Any]) -> None:
        if "id" in chunk:
            if self.exchange.upstream_id is None:
                self.exchange.upstream_id = chunk["id"]  # the provider's (clipped if not text)
            chunk["id"] = self.exchange.generation_id
        if "model" in chunk:
            chunk["model"] = self.exchange.model.id

    def kept_back(self) -> bytes:
        """The streamed text kept back in case it began a secret, as one more chunk (or
        nothing): sent before the last chunks, once the provider's stream is over."""
        choices = self.texts.flush() if self.texts is not None else []
        if not choices:
            return b""
        chunk = {
            "id": self.exchange.generation_id,
            "object": self.object_name,
            "created": self.created,
            "model": self.exchange.model.id,
            "choices": choices,
        }
        return self._out(b"data: " + orjson.dumps(chunk) + b"\n\n")

    def tail(self, failure: str | None) -> bytes:
        last = self.kept_back()
        if failure is not None:
            last += self.error_chunk(failure)
        return last + self.final_chunk() + DONE

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
        return self._out(b"data: " + orjson.dumps(chunk) + b"\n\n")

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
