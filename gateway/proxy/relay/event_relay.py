"""What every API's stream relay shares: SSE framing, secrets taken out, and the charge.

A provider's server-sent events are cut into whole events at their blank line (LF, CRLF or CR
line ends, split anywhere across reads), their `data:` lines joined, and their JSON handed to the
API's own relay (`_chunk`: chat chunks in sse_relay.py, Responses events in
gateway/proxy/apis/responses.py, Messages events in gateway/proxy/apis/messages.py), which notes
what it carries (output, usage, the finish) and says what the client is sent. Comments, `event:`
and other fields pass through in front of the data. Memory is one partial event (bounded). Every
configured secret is taken out of what passes, across events too (redaction.py).

A client that hangs up mid-stream is charged for what was generated until then (billing-rules):
the relay notes how much output it had passed on (events with output, and characters of output),
and the stream may still be read for the provider's usage (streaming.py). With the provider's
usage: its prompt as counted, and its output tokens in the share of output the client had been
sent (reasoning the model did not show counts whole: it came before any output). Without it: the
prompt the provider reported at the start (Messages does), else the likely prompt count, and one
token per event with output. Never more than the whole answer, when the provider's usage is had;
nothing when no output came.
"""

from typing import Any

import orjson

from gateway.proxy.relay.redaction import Redactor
from gateway.proxy.settle.exchange import Exchange
from metering.pricing import TokenUsage

MAX_EVENT_BYTES = 1024 * 1024


class ProviderStreamBroken(Exception):
    pass


class EventRelay:
    """One stream's relay; an API's subclass gives `_chunk`, `kept_back` and `tail`."""

    def __init__(self, exchange: Exchange, redactor: Redactor | None = None) -> None:
        self.exchange = exchange
        self.redactor = redactor if redactor is not None and redactor.secrets else None
        self.texts = self.redactor.stream() if self.redactor is not None else None
        self.buffer = b""
        self.data = b""  # the data of the event being relayed (as the provider sent it)
        self.content_chunks = 0
        self.output_chars = 0  # characters of output passed on (JSON's, for structured output)
        self.reasoning_shown = False  # the model streamed its reasoning as text
        self.left: tuple[int, int] | None = None  # (chunks, chars) when the client hung up
        self.done = False  # the provider's stream said it is over: read no further
        self.usage: TokenUsage | None = None
        self.prompt_reported: TokenUsage | None = None  # the prompt's counts, told at the start

    def feed(self, piece: bytes) -> bytes:
        if (
            not self.buffer
            and piece.startswith(b"data: ")
            and piece.find(b"\n") == len(piece) - 2
            and piece.endswith(b"\n\n")
            and b"\r" not in piece
            and not self.done
        ):  # one whole event of one data line, as providers mostly send them: no framing work
            emitted = self._data(piece[6:-2].strip(), b"")
            return self._out(emitted) if emitted else b""
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
        prefix = b"\n".join(fields) + b"\n" if fields else b""
        return self._data(b"\n".join(data_lines).strip(), prefix)

    def _data(self, data: bytes, prefix: bytes) -> bytes | None:
        """One event's data (its `data:` lines joined), after its other fields (`prefix`)."""
        if data == b"[DONE]":
            self.done = True
            return None
        if not prefix:
            known = self._like_the_last(data)
            if known is not None:
                return known
        self.data = data
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            chunk = None
        if chunk is None:
            return prefix + b"data: " + data + b"\n\n"  # not ours to judge: passed on as sent
        if not isinstance(chunk, dict):  # written anew: its escapes could spell out a secret
            return prefix + b"data: " + orjson.dumps(chunk) + b"\n\n"
        return self._chunk(chunk, prefix)

    def _chunk(self, chunk: dict[str, Any], prefix: bytes) -> bytes | None:
        """The client's bytes for one event's JSON object (None: nothing now)."""
        raise NotImplementedError

    def _like_the_last(self, data: bytes) -> bytes | None:
        """The client's bytes for an event that differs from an earlier one only in its text,
        without parsing it (None: parse it); an API's relay may know such events."""
        return None

    def kept_back(self) -> bytes:
        """Streamed text kept back in case it began a secret, as one more event (or nothing)."""
        raise NotImplementedError

    def tail(self, failure: str | None) -> bytes:
        """What the client is sent once the provider's stream is over and settled: what was
        kept back, the error when it broke off (`failure`), and the usage with its cost."""
        raise NotImplementedError

    def _out(self, data: bytes) -> bytes:
        return self.redactor.bytes(data) if self.redactor is not None else data

    def produced(self, chars: int) -> None:
        """One event carried `chars` characters of output."""
        if chars:
            self.content_chunks += 1
            self.output_chars += chars

    def client_left(self) -> None:
        """The client hung up: what it had been sent is what it is charged for."""
        if self.left is None:
            self.left = (self.content_chunks, self.output_chars)

    def charge(self) -> None:
        """The provider's usage; else one token per event with output; nothing if none came.
        For a client that hung up, the part of it that was generated before (see above)."""
        if self.left is not None:
            self._charge_cancelled(*self.left)
        elif self.usage is not None:
            self.exchange.charge(self.usage, "provider")
        elif self.content_chunks:
            self.exchange.charge(self._guess(self.exchange.prompt_estimate), "estimated")
        else:
            self.exchange.charge(TokenUsage(), "none")

    def _charge_cancelled(self, chunks: int, chars: int) -> None:
        exchange = self.exchange
        if not chunks:
            exchange.charge(TokenUsage(), "none")
        elif self.usage is not None and self.output_chars:
            exchange.charge(
                share(self.usage, chars, self.output_chars, self.reasoning_shown),
                "provider_share",
            )
        else:
            exchange.charge(self._guess(exchange.prompt_likely, chunks), "estimated")

    def _guess(self, prompt: int, completion: int | None = None) -> TokenUsage:
        """No usage at the end: the prompt as the provider told it at the start, else `prompt`;
        one output token per event with output."""
        output = self.content_chunks if completion is None else completion
        told = self.prompt_reported
        if told is None:
            return TokenUsage(prompt=prompt, completion=output)
        return TokenUsage(
            prompt=told.prompt, completion=output, cached=told.cached, cache_write=told.cache_write
        )


def sse_event(data: dict[str, Any]) -> bytes:
    """An event the relay writes itself, named by its data's `type` (as the Responses and
    Messages APIs name every event)."""
    name = str(data.get("type", "message"))
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def text_size(value: Any) -> int:
    """Characters of output in a streamed value (a string's, else its JSON's)."""
    if not value:
        return 0
    return len(value) if isinstance(value, str) else len(orjson.dumps(value))


def share(usage: TokenUsage, sent: int, total: int, reasoning_shown: bool) -> TokenUsage:
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
