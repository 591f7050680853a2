"""The SSE relay on its own: line ends split anywhere, multi-line data, other fields, id swaps."""

import json
from decimal import Decimal
from typing import Any

import orjson
import pytest

from config.catalog import ModelConfig, Pricing, ProviderConfig
from gateway.clock import ManualClock
from gateway.models import ResolvedModel
from gateway.proxy.relay.sse_relay import SseRelay
from gateway.proxy.settle.exchange import Exchange
from metering.pricing import PriceTable

PROVIDER = ProviderConfig(name="p", base_url="http://127.0.0.1:1/v1")
PRICING = Pricing(prompt=Decimal("0.000001"), completion=Decimal("0.000002"))
MODEL = ResolvedModel(
    config=ModelConfig(id="cat/model", provider="p", upstream_model="up-model", pricing=PRICING),
    prices=PriceTable.from_pricing(PRICING),
    providers=(PROVIDER,),
)


def _relay() -> SseRelay:
    exchange = Exchange(
        metering=None,
        clock=ManualClock(0),
        model=MODEL,  # type: ignore[arg-type]
        account_id="a",
        key_hash="k",
        generation_id="gen-a-1",
        streamed=True,
        prompt_estimate=10,
    )
    exchange.provider_name = "p"
    return SseRelay(exchange)


def _stream(sep: str = "\n", spaced: bool = False) -> bytes:
    dump = (lambda o: json.dumps(o)) if spaced else (lambda o: json.dumps(o, separators=(",", ":")))
    chunks: list[dict[str, Any]] = [
        {
            "id": "up-1",
            "object": "chat.completion.chunk",
            "model": "up-model-2024",
            "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}],
        }
        for w in ("Hello", " world")
    ]
    chunks.append(
        {
            "choices": [{"index": 0, "delta": {"tool_calls": [{"id": "call_1"}]}}],
            "id": "up-1",
            "model": "up-model-2024",
        }
    )
    chunks.append(
        {
            "id": "up-1",
            "model": "up-model-2024",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 7, "completion_tokens": 3},
        }
    )
    body = "".join(f"data: {dump(c)}{sep}{sep}" for c in chunks)
    return (body + f": keep-alive{sep}{sep}data: [DONE]{sep}{sep}").encode()


def _events(out: bytes) -> list[Any]:
    return [orjson.loads(block[6:]) for block in out.split(b"\n\n") if block.startswith(b"data: ")]


def _check(relay: SseRelay, out: bytes) -> None:
    events = _events(out)
    assert [e["choices"][0]["delta"] for e in events] == [
        {"content": "Hello"},
        {"content": " world"},
        {"tool_calls": [{"id": "call_1"}]},
    ]
    assert all(e["id"] == "gen-a-1" and e["model"] == "cat/model" for e in events)
    assert relay.done and relay.content_chunks == 3
    assert relay.exchange.finish_reason == "stop"
    relay.charge()
    assert relay.exchange.cost == 7 * 1000 + 3 * 2000
    final = orjson.loads(relay.final_chunk()[6:])
    assert final["usage"]["cost"] == pytest.approx(0.000013)
    assert final["id"] == "gen-a-1" and final["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize("sep", ["\n", "\r\n", "\r"])
@pytest.mark.parametrize("spaced", [False, True])
def test_every_split_point_gives_the_same_stream(sep: str, spaced: bool) -> None:
    raw = _stream(sep, spaced)
    for cut in range(0, len(raw), 7):
        relay = _relay()
        out = relay.feed(raw[:cut]) + relay.feed(raw[cut:]) + relay.end()
        _check(relay, out)


def test_byte_by_byte() -> None:
    relay = _relay()
    raw = _stream("\r\n")
    out = b"".join(relay.feed(raw[i : i + 1]) for i in range(len(raw)))
    _check(relay, out + relay.end())


def test_multi_line_data_and_other_fields() -> None:
    relay = _relay()
    out = relay.feed(
        b'event: message\ndata: {"id": "x",\ndata:  "choices": [{"delta": '
        b'{"content": "hi"}}]}\n\n: ping\n\nevent: end\ndata: [DONE]\n\n'
    )
    assert out.startswith(b"event: message\ndata: ")
    assert _events(out.split(b"\n", 1)[1])[0]["id"] == "gen-a-1"
    assert b": ping\n\n" in out
    assert relay.done and relay.content_chunks == 1


def test_nothing_produced_is_not_charged() -> None:
    relay = _relay()
    relay.feed(b'data: {"id": "x", "choices": [{"delta": {"role": "assistant"}}]}\n\n')
    relay.charge()
    assert relay.exchange.cost == 0 and relay.exchange.usage_source == "none"


def test_garbage_passes_through_uncounted() -> None:
    relay = _relay()
    assert relay.feed(b"data: {broken\n\n") == b"data: {broken\n\n"
    assert relay.content_chunks == 0


def test_a_hung_up_streams_share_counts_unshown_reasoning_whole() -> None:
    """Reasoning the model did not stream came before any output: it is charged whole, and the
    visible output in the share the client had; streamed reasoning is shared like the rest."""
    from gateway.proxy.relay.event_relay import share as _share
    from metering.pricing import TokenUsage

    usage = TokenUsage(prompt=30, completion=120, cached=10, reasoning=100)
    hidden = _share(usage, sent=50, total=100, reasoning_shown=False)
    assert (hidden.prompt, hidden.cached, hidden.reasoning, hidden.completion) == (30, 10, 100, 110)
    shown = _share(usage, sent=50, total=100, reasoning_shown=True)
    assert (shown.reasoning, shown.completion) == (50, 60)
    assert _share(usage, sent=1, total=3, reasoning_shown=True).completion == 40  # rounded up
    whole = _share(usage, sent=100, total=100, reasoning_shown=False)
    assert whole == usage
