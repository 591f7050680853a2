"""Hostile input, fuzzed: no exception but a clear 400 escapes the request-body parser, and no
exception escapes the SSE relay, whatever bytes arrive."""

import os

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.http.errors import ApiError
from gateway.proxy.request_body import parse_completion_request
from tests.proxy.test_sse_relay import _relay

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
bodies = st.dictionaries(
    st.sampled_from(
        [
            "model",
            "messages",
            "prompt",
            "stream",
            "stream_options",
            "max_tokens",
            "max_completion_tokens",
            "n",
            "best_of",
            "temperature",
            "top_p",
            "tools",
        ]
    ),
    json_values,
    max_size=8,
)


@settings(max_examples=EXAMPLES, deadline=None)
@given(raw=st.binary(max_size=300))
def test_any_bytes_are_a_request_or_a_400(raw: bytes) -> None:
    for kind in ("chat", "completions"):
        try:
            parse_completion_request(raw, kind)  # type: ignore[arg-type]
        except ApiError as exc:
            assert exc.status == 400


@settings(max_examples=EXAMPLES, deadline=None)
@given(body=bodies)
def test_any_json_object_is_a_request_or_a_400_naming_the_problem(body: dict[str, object]) -> None:
    raw = orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS)
    for kind in ("chat", "completions"):
        try:
            request = parse_completion_request(raw, kind)  # type: ignore[arg-type]
        except ApiError as exc:
            assert exc.status == 400 and exc.message
        else:
            assert isinstance(request.model, str) and request.completions >= 1


@settings(max_examples=EXAMPLES, deadline=None)
@given(
    pieces=st.lists(
        st.binary(max_size=200)
        | st.sampled_from(
            [
                b"data: ",
                b"\n\n",
                b"\r\n",
                b"\r",
                b"[DONE]",
                b'{"choices":[{"delta":{"content":"x"}}]}',
                b'{"usage":{"prompt_tokens":1,"completion_tokens":2}}',
                b": ping",
                b"event: x\n",
            ]
        ),
        max_size=30,
    )
)
def test_the_sse_relay_takes_any_bytes(pieces: list[bytes]) -> None:
    relay = _relay()
    for piece in pieces:
        relay.feed(piece)
    relay.end()
    relay.charge()
    assert relay.exchange.cost >= 0
    relay.final_chunk()


def test_numbers_json_cannot_hold_are_400s() -> None:
    for raw in (
        b'{"model": "m", "messages": [], "max_tokens": 1e400}',
        b'{"model": "m", "max_tokens": 99999999999999999999999999}',
        b'{"model": "m", "temperature": NaN}',
        b"[" * 100_000 + b"]" * 100_000,
    ):
        try:
            parse_completion_request(raw, "chat")
        except ApiError as exc:
            assert exc.status == 400
        else:
            raise AssertionError(raw[:40])
