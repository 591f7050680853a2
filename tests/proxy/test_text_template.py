"""The template path of the chat relay (gateway/proxy/relay/text_template.py) changes nothing a
client or the bill can see: for any stream of chunks (texts with quotes, escapes, non-ASCII and
secrets split across events; role, finish, usage and tool-call chunks; two choices; a `created`
that moves; events split across reads), the bytes sent, what is kept back, the output counted
and the usage are those of the full parse of every event."""

import json
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.proxy.relay.redaction import Redactor
from gateway.proxy.relay.sse_relay import SseRelay
from tests.proxy.test_sse_relay import _relay

SECRET = "sk-provider-secret-77a1c9"


class FullParse(SseRelay):
    def _like_the_last(self, data: bytes) -> bytes | None:
        return None


def _relay_of(kind: type[SseRelay], redacting: bool) -> SseRelay:
    relay = _relay()
    relay.__class__ = kind
    if redacting:
        relay.redactor = Redactor([SECRET])
        relay.texts = relay.redactor.stream()
    return relay


texts = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        ['say "hi"', "line\nbreak", "tab\there", "é ü 漢字", "back\\slash", "", "😀 a/b", "\x1f"]
    ),
    st.sampled_from([SECRET[:5], SECRET[5:12], SECRET[12:], SECRET, "sk-", "sk-pro"]),
)


@st.composite
def chunks(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["text"] * 6 + ["role", "finish", "usage", "tool", "two", "cmpl"]))
    base: dict[str, Any] = {
        "id": "chatcmpl-up",
        "object": "chat.completion.chunk",
        "created": draw(st.sampled_from([100, 100, 100, 101])),
        "model": "up-model",
    }
    text = draw(texts)
    choice: dict[str, Any] = {"index": 0, "delta": {"content": text}, "finish_reason": None}
    if kind == "role":
        choice["delta"] = {"role": "assistant", "content": text}
    elif kind == "finish":
        choice = {"index": 0, "delta": {}, "finish_reason": "stop"}
    elif kind == "tool":
        choice["delta"] = {"tool_calls": [{"index": 0, "function": {"arguments": text}}]}
    elif kind == "cmpl":
        base["object"] = "text_completion"
        choice = {"index": 0, "text": text, "finish_reason": None}
    choices = [choice]
    if kind == "two":
        choices.append({"index": 1, "delta": {"content": text}, "finish_reason": None})
    base["choices"] = choices
    base["usage"] = (
        {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8} if kind == "usage" else None
    )
    return base


def _run(relay: SseRelay, events: list[bytes], cuts: list[int]) -> tuple[Any, ...]:
    stream = b"".join(events)
    out, at = b"", 0
    for cut in [*sorted(set(cuts)), len(stream)]:
        if cut > at:
            out += relay.feed(stream[at:cut])
            at = cut
    out += relay.end() + relay.kept_back()
    return out, relay.content_chunks, relay.output_chars, relay.usage, relay.exchange.finish_reason


def _encoded(chunk: dict[str, Any], how: str) -> bytes:
    """As providers write JSON: orjson's way (UTF-8), Python's default (ASCII, \\u escapes,
    `\\/` never), or a broken one with a raw control byte in a text (not JSON at all)."""
    if how == "ascii":
        data = json.dumps(chunk, separators=(",", ":"), ensure_ascii=True).encode()
    else:
        data = orjson.dumps(chunk)
    if how == "raw-control":
        data = data.replace(b"\\t", b"\t").replace(b"\\n", b"\x01")
    return b"data: " + data + b"\n\n"


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(chunks(), st.sampled_from(["utf8"] * 4 + ["ascii", "raw-control"]))),
    st.booleans(),
    st.lists(st.integers(min_value=0, max_value=4000), max_size=6),
)
def test_the_template_path_relays_what_the_full_parse_relays(
    stream: list[tuple[dict[str, Any], str]], redacting: bool, cuts: list[int]
) -> None:
    events = [_encoded(chunk, how) for chunk, how in stream]
    fast = _relay_of(SseRelay, redacting)
    full = _relay_of(FullParse, redacting)
    assert _run(fast, events, cuts) == _run(full, events, cuts)
    # Reads of one whole event each (as providers send them) too.
    fast, full = _relay_of(SseRelay, redacting), _relay_of(FullParse, redacting)
    one_each = [b"".join(fast.feed(e) for e in events), b"".join(full.feed(e) for e in events)]
    assert one_each[0] == one_each[1]
    assert (fast.content_chunks, fast.output_chars) == (full.content_chunks, full.output_chars)


def test_plain_text_events_take_the_template_path() -> None:
    relay = _relay_of(SseRelay, True)
    parsed = 0
    original = relay._chunk

    def counting(chunk: dict[str, Any], prefix: bytes) -> bytes | None:
        nonlocal parsed
        parsed += 1
        return original(chunk, prefix)

    relay._chunk = counting  # type: ignore[method-assign]
    words = ["Hello", " there", ", ", "how", " are", " you", "?"] * 10
    for word in words:
        chunk = {
            "id": "chatcmpl-up",
            "object": "chat.completion.chunk",
            "created": 100,
            "model": "up-model",
            "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}],
        }
        sent = relay.feed(b"data: " + orjson.dumps(chunk) + b"\n\n")
        assert orjson.loads(sent[6:])["choices"][0]["delta"]["content"] == word
        assert orjson.loads(sent[6:])["id"] == "gen-a-1"
    assert parsed == 1  # the first only
    assert relay.output_chars == sum(len(w) for w in words)


def test_escaped_texts_and_raw_control_bytes_relay_as_the_full_parse_does() -> None:
    def chunk(text: str) -> dict[str, Any]:
        return {
            "id": "chatcmpl-up",
            "object": "chat.completion.chunk",
            "created": 100,
            "model": "up-model",
            "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}],
        }

    events = [_encoded(chunk("plain"), "utf8")]
    events += [_encoded(chunk(t), "ascii") for t in ("café", "a/b", "😀", "tab\tx", "\x1f")]
    events += [_encoded(chunk("tab\there"), "raw-control"), _encoded(chunk("end"), "utf8")]
    for redacting in (False, True):
        fast, full = _relay_of(SseRelay, redacting), _relay_of(FullParse, redacting)
        assert [fast.feed(e) for e in events] == [full.feed(e) for e in events]
        assert (fast.content_chunks, fast.output_chars) == (full.content_chunks, full.output_chars)
