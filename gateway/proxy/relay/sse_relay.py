"""Turn a provider's server-sent events into the client's, one complete event at a time.

Each event is cut at its blank line (LF, CRLF or CR line ends, split anywhere across reads), its
`data:` lines are joined, and its JSON is parsed: the top-level `id` and `model` become the
generation id and the catalog id, content chunks are counted, `finish_reason` is noted, and the
chunk that carries `usage` is held back so that it can be sent last with `cost` added, just before
`data: [DONE]`. Comments and other fields pass through. Memory is one partial event (bounded). Every
configured secret is taken out of what passes, across events too (gateway/proxy/relay/redaction.py).

A client that hangs up mid-stream is charged for what was generated until then (billing-rules): the
relay notes how much output it had passed on (content chunks, and characters of output), and the
stream may still be read for the provider's usage (see gateway/proxy/relay/streaming.py). With the
provider's usage: its prompt as counted, and its output tokens in the share of output the client had
been sent (reasoning the model did not show counts whole: it came before any output). Without it:
the likely prompt count and one token per content chunk. Never more than the whole answer, when the
provider's usage is had; nothing when no output came.
"""

import time
from typing import Any

import orjson

from gateway.proxy.relay.provider_usage import parse_usage, usage_with_cost
from gateway.proxy.relay.redaction import Redactor
from gateway.proxy.settle.exchange import Exchange
from metering.pricing import TokenUsage

MAX_EVENT_BYTES = 1024 * 1024
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


class ProviderStreamBroken(Exception):
    pass


class SseRelay:
    def __init__(self, exchange: Exchange, redactor: Redactor | None = None) -> None:
        self.exchange = exchange
        self.redactor = redactor if redactor is not None and redactor.secrets else None
        self.texts = self.redactor.stream() if self.redactor is not None else None
        self.buffer = b""
        self.content_chunks = 0
        self.output_chars = 0  # characters of output passed on (JSON's, for structured output)
        self.reasoning_shown = False  # the model streamed its reasoning as text
        self.left: tuple[int, int] | None = None  # (chunks, chars) when the client hung up
        self.done = False
        self.usage_chunk: dict[str, Any] | None = None
        self.usage: TokenUsage | None = None
        self.object_name = "chat.completion.chunk"
        self.created = int(time.time())

    def feed(self, piece: bytes) -> bytes:
        self.buffer += piece
        if b"\r" in self.buffer:
            # Hold back a trailing CR: the LF of the same line end may be in the next read.
            held = self.buffer.endswith(b"\r")
            body = self.buffer[:-1] if held else self.buffer
            self.buffer = body.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            if held:
                self.buffer += b"\r"
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
        return self._out(b"".join(out))

    def end(self) -> bytes:
        """At the end of the provider's stream: a held CR was a line end after all."""
        if self.buffer.endswith(b"\r"):
            self.buffer = self.buffer[:-1]
            return self.feed(b"\n")
        return b""

    def _event(self, event: bytes) -> bytes | None:
        data_lines: list[bytes] = []
        fields: list[bytes] = []  # comments, event:, id:, retry: pass through
        for line in event.split(b"\n"):
            if line.startswith(b"data:"):
                value = line[5:]
                data_lines.append(value[1:] if value.startswith(b" ") else value)
            elif line:
                fields.append(line)
        if not data_lines:
            return event + b"\n\n" if fields else None
        data = b"\n".join(data_lines).strip()
        if data == b"[DONE]":
            self.done = True
            return None
        prefix = b"\n".join(fields) + b"\n" if fields else b""
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            chunk = None
        if chunk is None:
            return prefix + b"data: " + data + b"\n\n"  # not ours to judge: passed on as sent
        if not isinstance(chunk, dict):  # written anew: its escapes could spell out a secret
            return prefix + b"data: " + orjson.dumps(chunk) + b"\n\n"
        self._note(chunk)
        usage = chunk.get("usage")
        tokens = parse_usage(usage) if isinstance(usage, dict) else None
        if tokens is not None:
            self.usage_chunk, self.usage = chunk, tokens
            return None
        self._swap(chunk)
        return prefix + b"data: " + orjson.dumps(chunk) + b"\n\n"

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
                produced += _size(text)
                if texts is not None and isinstance(text, str):
                    choice["text"] = texts.text(index, "text", text, final)
            delta = choice.get("delta")
            if isinstance(delta, dict):
                for field, value in delta.items():  # a field or two: cheaper than a lookup each
                    if not value or field not in _OUTPUT_SET:
                        continue
                    produced += _size(value)
                    if field in _REASONING_FIELDS:
                        self.reasoning_shown = True
                    if texts is not None:  # a value replaced in place: the dict keeps its size
                        texts.field(delta, field, value, index, final)
            if final and texts is not None:
                texts.finish(choice, index)
        if produced:
            self.content_chunks += 1
            self.output_chars += produced

    def _swap(self, chunk: dict[str, Any]) -> None:
        if "id" in chunk:
            chunk["id"] = self.exchange.generation_id
        if "model" in chunk:
            chunk["model"] = self.exchange.model.id

    def client_left(self) -> None:
        """The client hung up: what it had been sent is what it is charged for."""
        if self.left is None:
            self.left = (self.content_chunks, self.output_chars)

    def charge(self) -> None:
        """The provider's usage; else one token per content chunk; nothing if nothing came.
        For a client that hung up, the part of it that was generated before (see above)."""
        if self.left is not None:
            self._charge_cancelled(*self.left)
        elif self.usage is not None:
            self.exchange.charge(self.usage, "provider")
        elif self.content_chunks:
            self.exchange.charge(
                TokenUsage(prompt=self.exchange.prompt_estimate, completion=self.content_chunks),
                "estimated",
            )
        else:
            self.exchange.charge(TokenUsage(), "none")

    def _charge_cancelled(self, chunks: int, chars: int) -> None:
        exchange = self.exchange
        if not chunks:
            exchange.charge(TokenUsage(), "none")
        elif self.usage is not None and self.output_chars:
            exchange.charge(
                _share(self.usage, chars, self.output_chars, self.reasoning_shown),
                "provider_share",
            )
        else:
            likely = TokenUsage(prompt=exchange.prompt_likely, completion=chunks)
            exchange.charge(likely, "estimated")

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

    def _out(self, data: bytes) -> bytes:
        return self.redactor.bytes(data) if self.redactor is not None else data

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


def _size(value: Any) -> int:
    if not value:
        return 0
    return len(value) if isinstance(value, str) else len(orjson.dumps(value))


def _share(usage: TokenUsage, sent: int, total: int, reasoning_shown: bool) -> TokenUsage:
    """The provider's usage for a stream whose client had been sent `sent` of `total`
    characters of output: the prompt whole, output tokens in that share (rounded up). Reasoning
    the model did not stream came before any output, so it counts whole."""
    if reasoning_shown:
        reasoning = _ceil_share(usage.reasoning, sent, total)
        completion = _ceil_share(usage.completion, sent, total)
    else:
        reasoning = usage.reasoning
        completion = reasoning + _ceil_share(max(usage.completion - reasoning, 0), sent, total)
    return TokenUsage(
        prompt=usage.prompt,
        completion=min(completion, usage.completion),
        cached=usage.cached,
        cache_write=usage.cache_write,
        reasoning=min(reasoning, usage.reasoning),
        images=usage.images,
    )


def _ceil_share(tokens: int, sent: int, total: int) -> int:
    return -(-tokens * sent // total)
