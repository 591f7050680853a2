"""OpenRouter's shapes beside ours: the models list, the generation record and the activity rows
have OpenRouter's field names with its types (as its API reference and SDKs type them), every field
of ours still there, from real requests through the gateway (a real Redis, the simulated provider,
a scripted one where a provider must report cached tokens)."""

import hashlib
import re
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from config.catalog import ModelConfig, Pricing, ProviderConfig
from gateway.app import create_app
from gateway.clock import ManualClock
from gateway.state import CLOCK
from tests.scripted_provider import ScriptedProvider, json_answer, sends
from tests.support import (
    PAID,
    ThreadedServer,
    bearer,
    chat,
    generation_record,
    make_settings,
    new_account,
)
from tests.support import (
    test_catalog as catalog_of,
)

DAY0 = 1_795_737_600.0  # 2026-11-27 00:00 UTC
CACHED_ANSWER = orjson.dumps(
    {
        "id": "chatcmpl-cached-7",
        "object": "chat.completion",
        "model": "upstream",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
        ],
        "usage": {
            "prompt_tokens": 1200,
            "completion_tokens": 2,
            "total_tokens": 1202,
            "prompt_tokens_details": {"cached_tokens": 1000},
        },
    }
)
DECIMAL = re.compile(r"^[0-9]+(\.[0-9]+)?$")


@pytest.fixture
async def scripted() -> AsyncIterator[ScriptedProvider]:
    provider = ScriptedProvider([sends(json_answer(CACHED_ANSWER))])
    yield provider
    if provider.server is not None:
        await provider.stop()


@pytest.fixture
async def oc(
    redis_url: str, provider: ThreadedServer, scripted: ScriptedProvider
) -> AsyncIterator[TestClient]:
    """The test catalog, and models that say what OpenRouter's list says beside the prices."""
    providers, models = catalog_of(provider.url)
    providers += [
        ProviderConfig(name="embedsim", base_url=provider.url + "/v1", apis=("embeddings",)),
        ProviderConfig(
            name="cachey", base_url=await scripted.start(), api_key_env="SIM_PROVIDER_KEY"
        ),
    ]
    models += [
        ModelConfig(
            id="test/described",
            providers=["sim2"],  # declares ("temperature",) only
            upstream_model="sim-gpt",
            pricing=Pricing(
                prompt=Decimal("0.0000025"),
                completion=Decimal("0.00001"),
                input_cache_read=Decimal("0.00000125"),
            ),
            context_length=128000,
            canonical_slug="test/described-2026-12-01",
            created=1_796_083_200,
            description="A model the catalog describes",
            input_modalities=("text", "image"),
            tokenizer="GPT",
            instruct_type="chatml",
        ),
        ModelConfig(id="test/embed", provider="embedsim", upstream_model="sim-embed", pricing=PAID),
        ModelConfig(
            id="test/cached",
            provider="cachey",
            pricing=Pricing(
                prompt=Decimal("0.0000025"),
                completion=Decimal("0.00001"),
                input_cache_read=Decimal("0.00000125"),
            ),
        ),
    ]
    settings = make_settings(redis_url, provider.url, providers=providers, models=models)
    app = create_app(settings, clock=ManualClock(DAY0 + 3600))
    async with TestClient(TestServer(app, host="127.0.0.1")) as c:
        yield c


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _nullable(value: Any, kind: type) -> bool:
    return value is None or (isinstance(value, kind) and not isinstance(value, bool))


def _check_model(m: dict[str, Any]) -> None:
    """One entry, field by field, as OpenRouter's models list types it, and ours still there."""
    assert isinstance(m["id"], str) and isinstance(m["canonical_slug"], str)
    assert isinstance(m["name"], str) and isinstance(m["description"], str)
    assert isinstance(m["created"], int) and not isinstance(m["created"], bool)
    assert _nullable(m["context_length"], int)
    arch = m["architecture"]
    assert set(arch) == {
        "modality",
        "input_modalities",
        "output_modalities",
        "tokenizer",
        "instruct_type",
    }
    assert all(isinstance(x, str) for x in arch["input_modalities"] + arch["output_modalities"])
    assert arch["modality"] == (
        "+".join(arch["input_modalities"]) + "->" + "+".join(arch["output_modalities"])
    )
    assert isinstance(arch["tokenizer"], str) and _nullable(arch["instruct_type"], str)
    assert set(m["pricing"]) == {
        "prompt",
        "completion",
        "request",
        "image",
        "web_search",
        "internal_reasoning",
        "input_cache_read",
        "input_cache_write",
    }
    assert all(isinstance(v, str) and DECIMAL.match(v) for v in m["pricing"].values())
    top = m["top_provider"]
    assert set(top) == {"context_length", "max_completion_tokens", "is_moderated"}
    assert _nullable(top["context_length"], int) and _nullable(top["max_completion_tokens"], int)
    assert top["is_moderated"] is False
    assert m["per_request_limits"] is None
    assert all(isinstance(p, str) for p in m["supported_parameters"])
    # Ours, beside them.
    assert m["object"] == "model" and isinstance(m["owned_by"], str)
    assert isinstance(m["providers"], list) and isinstance(m["is_free"], bool)


async def test_models_list_has_openrouters_fields_beside_ours(oc: TestClient) -> None:
    data = (await (await oc.get("/api/v1/models")).json())["data"]
    for entry in data:
        _check_model(entry)
    models = {m["id"]: m for m in data}

    described = models["test/described"]
    assert described["canonical_slug"] == "test/described-2026-12-01"
    assert described["created"] == 1_796_083_200
    assert described["description"] == "A model the catalog describes"
    assert described["context_length"] == described["top_provider"]["context_length"] == 128000
    assert described["architecture"] == {
        "modality": "text+image->text",
        "input_modalities": ["text", "image"],
        "output_modalities": ["text"],
        "tokenizer": "GPT",
        "instruct_type": "chatml",
    }
    # Its only provider declares temperature; max_tokens is always honoured.
    assert described["supported_parameters"] == ["max_tokens", "temperature"]
    assert described["pricing"] == {
        "prompt": "0.0000025",
        "completion": "0.00001",
        "request": "0",
        "image": "0",
        "web_search": "0",
        "internal_reasoning": "0",
        "input_cache_read": "0.00000125",
        "input_cache_write": "0.0000025",  # not listed: charged the prompt price
    }

    paid = models["test/paid"]
    assert paid["canonical_slug"] == "test/paid" and paid["created"] == 0
    assert paid["context_length"] is None
    assert paid["top_provider"]["max_completion_tokens"] == 1000
    assert paid["architecture"]["modality"] == "text->text"
    assert paid["architecture"]["tokenizer"] == "Other"
    assert paid["architecture"]["instruct_type"] is None
    assert "tools" in paid["supported_parameters"]  # nothing declared: the chat default
    assert paid["pricing"]["input_cache_read"] == paid["pricing"]["prompt"] == "0.00000015"

    embed = models["test/embed"]  # its provider serves embeddings only
    assert embed["architecture"]["output_modalities"] == ["embeddings"]
    assert embed["architecture"]["modality"] == "text->embeddings"
    assert embed["supported_parameters"] == ["dimensions", "encoding_format"]


GENERATION_FIELDS: dict[str, Any] = {
    # OpenRouter's fields and their types (None in a tuple: nullable).
    "id": (str,),
    "upstream_id": (str, None),
    "total_cost": ("number",),
    "cache_discount": ("number", None),
    "created_at": (str,),
    "model": (str,),
    "app_id": ("number", None),
    "streamed": (bool, None),
    "cancelled": (bool, None),
    "provider_name": (str, None),
    "latency": ("number", None),
    "moderation_latency": ("number", None),
    "generation_time": ("number", None),
    "finish_reason": (str, None),
    "native_finish_reason": (str, None),
    "tokens_prompt": ("number", None),
    "tokens_completion": ("number", None),
    "native_tokens_prompt": ("number", None),
    "native_tokens_completion": ("number", None),
    "native_tokens_reasoning": ("number", None),
    "native_tokens_cached": ("number", None),
    "num_media_prompt": ("number", None),
    "origin": (str,),
    "usage": ("number",),
    "is_byok": (bool,),
    "external_user": (str, None),
    "router": (str, None),
}
OURS = (
    "api_key_hash",
    "total_cost_usd",
    "status",
    "usage_source",
    "zero_completion_insurance",
    "failed_attempts",
)


def _check_generation(data: dict[str, Any]) -> None:
    for name, kinds in GENERATION_FIELDS.items():
        value = data[name]
        assert any(
            (value is None and kind is None)
            or (kind == "number" and _is_number(value))
            or (isinstance(kind, type) and isinstance(value, kind))
            for kind in kinds
        ), (name, value)
    assert all(name in data for name in OURS)


async def test_generation_has_openrouters_fields_from_the_request(oc: TestClient) -> None:
    _, key = await new_account(oc, purchase="5.00")
    asked = chat("test/paid", user="user-123")
    referer = {"HTTP-Referer": "https://app.example/"}
    resp = await oc.post("/api/v1/chat/completions", json=asked, headers=bearer(key) | referer)
    assert resp.status == 200, await resp.text()
    data = await generation_record(oc, key, resp.headers["X-Generation-Id"])
    _check_generation(data)
    assert data["external_user"] == "user-123" and data["origin"] == "https://app.example/"
    assert data["upstream_id"].startswith("simcmpl-")  # the simulated provider's own id
    assert data["native_tokens_prompt"] == data["tokens_prompt"] == 6
    assert data["native_tokens_completion"] == data["tokens_completion"] == 16
    assert data["native_finish_reason"] == data["finish_reason"] == "stop"
    assert data["usage"] == data["total_cost"] == float(data["total_cost_usd"])
    assert data["cache_discount"] is None  # no cached token
    assert (data["is_byok"], data["router"], data["app_id"], data["moderation_latency"]) == (
        False,
        None,
        None,
        None,
    )

    plain = await oc.post("/api/v1/chat/completions", json=chat("test/paid"), headers=bearer(key))
    data = await generation_record(oc, key, plain.headers["X-Generation-Id"])
    _check_generation(data)
    assert data["external_user"] is None and data["origin"] == ""

    long = chat("test/paid", user="u" * 1000, stream=True)
    streamed = await oc.post("/api/v1/chat/completions", json=long, headers=bearer(key))
    await streamed.read()
    data = await generation_record(oc, key, streamed.headers["X-Generation-Id"])
    _check_generation(data)
    assert data["external_user"] == "u" * 256  # clipped: every request writes a record
    assert data["upstream_id"].startswith("simcmpl-")  # a stream's too, from its chunks


async def test_cache_discount_is_what_the_cache_took_off(oc: TestClient) -> None:
    _, key = await new_account(oc, purchase="5.00")
    resp = await oc.post("/api/v1/chat/completions", json=chat("test/cached"), headers=bearer(key))
    assert resp.status == 200, await resp.text()
    data = await generation_record(oc, key, resp.headers["X-Generation-Id"])
    _check_generation(data)
    # 1,000 of 1,200 prompt tokens read from the cache at $0.00000125 instead of $0.0000025.
    assert Decimal(str(data["cache_discount"])) == Decimal("0.00125")
    # 200 x $0.0000025 + 1,000 x $0.00000125 + 2 x $0.00001
    assert Decimal(data["total_cost_usd"]) == Decimal("0.00177")
    assert data["native_tokens_cached"] == 1000 and data["upstream_id"] == "chatcmpl-cached-7"


ITEM_FIELDS = {
    "date": str,
    "model": str,
    "model_permaslug": str,
    "endpoint_id": str,
    "provider_name": str,
    "usage": "number",
    "byok_usage_inference": "number",
    "requests": "number",
    "prompt_tokens": "number",
    "completion_tokens": "number",
    "reasoning_tokens": "number",
}


def _check_item(item: dict[str, Any]) -> None:
    for name, kind in ITEM_FIELDS.items():
        value = item[name]
        assert _is_number(value) if kind == "number" else isinstance(value, str), (name, value)
    assert re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", item["date"])
    uuid.UUID(item["endpoint_id"])
    assert item["byok_usage_inference"] == 0
    assert Decimal(str(item["usage"])) == Decimal(item["spend"])  # the same USD, exactly


async def _spend(c: TestClient, key: str, model: str, n: int) -> Decimal:
    spent = Decimal(0)
    for _ in range(n):
        resp = await c.post("/api/v1/chat/completions", json=chat(model), headers=bearer(key))
        assert resp.status == 200
        spent += Decimal(str((await resp.json())["usage"]["cost"]))
    return spent


async def test_activity_in_openrouters_shape_when_asked_as_it_is_asked(oc: TestClient) -> None:
    _, key = await new_account(oc, purchase="5.00")
    _, other = await new_account(oc, purchase="1.00")
    clock = oc.app[CLOCK]
    assert isinstance(clock, ManualClock)
    first = await _spend(oc, key, "test/paid", 3)
    await _spend(oc, key, "test/described", 1)
    clock.advance(86_400)  # 2026-11-28
    second = await _spend(oc, key, "test/paid", 2)
    clock.advance(86_400)  # 2026-11-29: both days are complete
    await _spend(oc, key, "test/paid", 1)  # today's: not in the last 30 completed days

    rows = (await (await oc.get("/api/v1/activity?shape=openrouter", headers=bearer(key))).json())[
        "data"
    ]
    for row in rows:
        _check_item(row)
    assert [(r["date"], r["model"], r["provider_name"], r["requests"]) for r in rows] == [
        ("2026-11-27", "test/described", "sim2", 1),
        ("2026-11-27", "test/paid", "sim", 3),
        ("2026-11-28", "test/paid", "sim", 2),
    ]
    assert Decimal(rows[1]["spend"]) == first and Decimal(rows[2]["spend"]) == second
    assert rows[0]["model_permaslug"] == "test/described-2026-12-01"
    assert rows[1]["model_permaslug"] == "test/paid"
    assert rows[1]["endpoint_id"] == rows[2]["endpoint_id"] != rows[0]["endpoint_id"]
    assert rows[1]["prompt_tokens"] == 18 and rows[1]["completion_tokens"] == 48

    one_day = await oc.get("/api/v1/activity?date=2026-11-28", headers=bearer(key))
    assert (await one_day.json())["data"] == [rows[2]]
    today = await oc.get("/api/v1/activity?date=2026-11-29", headers=bearer(key))
    assert [r["requests"] for r in (await today.json())["data"]] == [1]
    for holder, expected in ((key, rows), (other, [])):  # another account's key: none here
        q = f"api_key_hash={hashlib.sha256(holder.encode()).hexdigest()}&date=2026-11-27"
        by_key = await oc.get(f"/api/v1/activity?{q}", headers=bearer(key))
        assert (await by_key.json())["data"] == expected[:2]

    ours = (await (await oc.get("/api/v1/activity", headers=bearer(key))).json())["data"]
    assert set(ours) == {"buckets", "totals"}  # without them: our shape, as before

    for q in (
        "date=2026-11-31",
        "date=2026-11-30",  # tomorrow
        "date=27-11-2026",
        "shape=gateway",
        "shape=openrouter&granularity=hour",
        "date=2026-11-27&from=2026-11-27T00:00:00Z",
    ):
        resp = await oc.get(f"/api/v1/activity?{q}", headers=bearer(key))
        assert resp.status == 400, q


async def test_messages_answer_keeps_the_providers_id_and_its_cache_discount(
    oc: TestClient,
) -> None:
    """Anthropic's Messages API: the answer's id becomes the generation id, the record keeps the
    provider's; 100 prompt tokens read from the cache, 50 written to it (the simulated
    provider's sim-cache), both at their listed prices."""
    _, key = await new_account(oc, purchase="1.00")
    body = {
        "model": "test/cache",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "Hi"}],
    }
    resp = await oc.post("/api/v1/messages", json=body, headers={"x-api-key": key})
    assert resp.status == 200, await resp.text()
    answer = await resp.json()
    data = await generation_record(oc, key, resp.headers["X-Generation-Id"])
    _check_generation(data)
    assert answer["id"] == data["id"] and data["upstream_id"].startswith("msg_sim")
    # 100 x ($0.00000015 - $0.000000015) saved, 50 x ($0.0000001875 - $0.00000015) more.
    assert Decimal(str(data["cache_discount"])) == Decimal("0.000011625")
