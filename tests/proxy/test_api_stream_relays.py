"""The Responses and Messages stream relays on their own: a secret a model echoes piece by piece
across deltas never reaches the client whole (text kept back is sent before the text's closing
event), the usage event is held back and sent last with its cost, and a stream that breaks off
ends in the API's own error event with the charge in it."""

from typing import Any

import orjson
import pytest

from gateway.proxy.apis.messages_stream import MessagesRelay
from gateway.proxy.apis.responses_stream import ResponsesRelay
from gateway.proxy.relay.event_relay import EventRelay
from gateway.proxy.relay.redaction import REDACTED, Redactor
from gateway.proxy.settle.exchange import Exchange
from tests.proxy.test_sse_relay import _relay

KEY = "sk-provider-key-echoed-by-the-model-9f8e7d6c5b4a"
SAID = "the key is " + KEY + " ok"
PIECES = [SAID[i : i + 5] for i in range(0, len(SAID), 5)]


def _exchange() -> Exchange:
    return _relay().exchange


def _sse(kind: str, data: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **data}) + b"\n\n"


def _events(out: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(line[6:]) for line in out.split(b"\n") if line.startswith(b"data: {")]


def _responses_stream() -> list[bytes]:
    place = {"item_id": "msg_1", "output_index": 0, "content_index": 0}
    events = [_sse("response.created", {"response": {"id": "resp_1", "model": "up"}})]
    events += [_sse("response.output_text.delta", {**place, "delta": p}) for p in PIECES]
    events.append(_sse("response.output_text.done", {**place, "text": SAID}))
    usage = {"input_tokens": 7, "output_tokens": len(PIECES), "total_tokens": 7 + len(PIECES)}
    done = {"id": "resp_1", "model": "up", "status": "completed", "usage": usage}
    events.append(_sse("response.completed", {"response": done}))
    return events


def _messages_stream() -> list[bytes]:
    usage = {"input_tokens": 7, "cache_read_input_tokens": 0, "output_tokens": 1}
    start = {"id": "msg_up", "model": "up", "usage": usage}
    events = [_sse("message_start", {"message": start})]
    events.append(_sse("content_block_start", {"index": 0, "content_block": {"type": "text"}}))
    for piece in PIECES:
        delta = {"type": "text_delta", "text": piece}
        events.append(_sse("content_block_delta", {"index": 0, "delta": delta}))
    events.append(_sse("content_block_stop", {"index": 0}))
    final = {"delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": len(PIECES)}}
    events.append(_sse("message_delta", final))
    events.append(_sse("message_stop", {}))
    return events


def _run(relay: EventRelay, events: list[bytes], failure: str | None = None) -> bytes:
    relay.redactor = Redactor([KEY])
    relay.texts = relay.redactor.stream()
    out = b"".join(relay.feed(event) for event in events) + relay.end()
    relay.charge()
    return out + relay.tail(failure)


def _text(events: list[dict[str, Any]], kind: str, field: str) -> str:
    found = []
    for event in events:
        if event.get("type") == kind:
            value = event["delta"]
            found.append(value if isinstance(value, str) else value[field])
    return "".join(found)


def test_responses_stream_redacts_an_echoed_key_and_ends_with_its_cost() -> None:
    relay = ResponsesRelay(_exchange())
    out = _run(relay, _responses_stream())
    assert KEY.encode() not in out
    events = _events(out)
    assert _text(events, "response.output_text.delta", "") == SAID.replace(KEY, REDACTED)
    kinds = [e["type"] for e in events]
    assert kinds.index("response.output_text.done") > max(
        i for i, k in enumerate(kinds) if k == "response.output_text.delta"
    )
    last = events[-1]
    assert last["type"] == "response.completed" and last["response"]["model"] == "cat/model"
    assert last["response"]["id"] == "resp_1"  # the provider's, for previous_response_id
    assert last["response"]["usage"]["cost"] == pytest.approx(relay.exchange.cost / 1e9)
    assert relay.exchange.usage is not None and relay.exchange.usage.prompt == 7


def test_messages_stream_redacts_an_echoed_key_and_ends_with_its_cost() -> None:
    relay = MessagesRelay(_exchange())
    out = _run(relay, _messages_stream())
    assert KEY.encode() not in out
    events = _events(out)
    assert _text(events, "content_block_delta", "text") == SAID.replace(KEY, REDACTED)
    kinds = [e["type"] for e in events]
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert events[0]["message"]["id"] == "gen-a-1" and events[0]["message"]["model"] == "cat/model"
    assert events[-2]["usage"]["cost"] == pytest.approx(relay.exchange.cost / 1e9)
    assert relay.exchange.finish_reason == "stop"


def test_a_broken_responses_stream_ends_in_response_failed_with_the_charge() -> None:
    relay = ResponsesRelay(_exchange())
    out = _run(relay, _responses_stream()[:5], failure="provider p broke off the stream")
    last = _events(out)[-1]
    assert last["type"] == "response.failed"
    assert last["response"]["error"]["message"] == "provider p broke off the stream"
    assert last["response"]["usage"]["output_tokens"] == 4  # one a delta, no usage came


def test_a_broken_messages_stream_ends_in_an_error_after_its_usage() -> None:
    relay = MessagesRelay(_exchange())
    out = _run(relay, _messages_stream()[:6], failure="provider p broke off the stream")
    events = _events(out)
    assert [e["type"] for e in events[-2:]] == ["message_delta", "error"]
    # The prompt as message_start told it, one token a delta for the output.
    assert events[-2]["usage"]["input_tokens"] == 7 and events[-2]["usage"]["output_tokens"] == 4
