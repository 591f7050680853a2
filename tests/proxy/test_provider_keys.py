"""The operator's side of routing: several keys per provider used in turn, a key or a provider
that is rate limited or fails cooled down (Retry-After when given) and passed over meanwhile,
and bounded retry rounds before any output."""

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from config.catalog import ModelConfig, ProviderConfig
from gateway.app import create_app
from gateway.proxy.forward.cooldowns import Cooldowns, retry_after_seconds
from tests.support import (
    PAID,
    ThreadedServer,
    bearer,
    chat,
    generation_record,
    make_settings,
    new_account,
)
from tests.support import test_catalog as catalog_for

KEYS = {"GW_TEST_KEY_ONE": "sk-test-key-one-4b1f", "GW_TEST_KEY_TWO": "sk-test-key-two-9c2e"}
ANSWER = {
    "id": "x",
    "object": "chat.completion",
    "model": "m",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
}
Behaviour = Callable[[str, int], web.Response | None]  # (key, request number) -> answer or None


class RecordingProvider:
    """An OpenAI-style provider that notes the key of every request and answers as told."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.behaviour: Behaviour = lambda key, n: None
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._answer)
        self.server = ThreadedServer(app)

    async def _answer(self, request: web.Request) -> web.Response:
        key = request.headers.get("Authorization", "").removeprefix("Bearer ")
        self.keys.append(key)
        told = self.behaviour(key, len(self.keys))
        return told or web.Response(body=orjson.dumps(ANSWER), content_type="application/json")


@pytest.fixture
def recording() -> Iterator[RecordingProvider]:
    provider = RecordingProvider()
    provider.server.start()
    os.environ.update(KEYS)
    yield provider
    provider.server.stop()


async def _gateway(
    redis_url: str, sim_url: str, recording: RecordingProvider, **settings: Any
) -> TestClient:
    providers, models = catalog_for(sim_url)
    providers.append(
        ProviderConfig(name="rec", base_url=recording.server.url + "/v1", api_key_envs=tuple(KEYS))
    )
    models += [
        ModelConfig(id="test/rec", provider="rec", pricing=PAID),
        ModelConfig(
            id="test/rec-then-sim", providers=["rec", "sim"], upstream_model="sim-gpt", pricing=PAID
        ),
    ]
    config = make_settings(redis_url, sim_url, providers=providers, models=models, **settings)
    client = TestClient(TestServer(create_app(config), host="127.0.0.1"))
    await client.start_server()
    return client


@pytest.fixture
async def gw(
    redis_url: str, provider: ThreadedServer, recording: RecordingProvider
) -> AsyncIterator[TestClient]:
    client = await _gateway(redis_url, provider.url, recording, provider_cooldown_seconds=30)
    yield client
    await client.close()


async def _ask(client: TestClient, key: str, model: str) -> tuple[int, dict[str, Any]]:
    resp = await client.post("/api/v1/chat/completions", json=chat(model), headers=bearer(key))
    body = await resp.json()
    if resp.status != 200:
        return resp.status, body
    return 200, await generation_record(client, key, resp.headers["X-Generation-Id"])


def _busy_key(key: str, retry_after: str = "30") -> Behaviour:
    def behaviour(used: str, n: int) -> web.Response | None:
        if used != key:
            return None
        return web.json_response(
            {"error": {"message": "rate limited"}}, status=429, headers={"Retry-After": retry_after}
        )

    return behaviour


async def test_keys_are_used_in_turn(gw: TestClient, recording: RecordingProvider) -> None:
    _, key = await new_account(gw, purchase="1.00")
    for _ in range(4):
        assert (await _ask(gw, key, "test/rec"))[0] == 200
    one, two = KEYS.values()
    assert recording.keys == [one, two, one, two]


async def test_a_rate_limited_key_is_passed_over_while_it_cools(
    gw: TestClient, recording: RecordingProvider
) -> None:
    one, two = KEYS.values()
    recording.behaviour = _busy_key(one)
    _, key = await new_account(gw, purchase="1.00")
    status, record = await _ask(gw, key, "test/rec")
    assert status == 200 and record["provider_name"] == "rec"
    assert record["failed_attempts"] == [{"model": "test/rec", "provider": "rec", "status": 429}]
    assert recording.keys == [one, two]
    for _ in range(3):  # key one cools for its Retry-After (30 s): only key two is used
        assert (await _ask(gw, key, "test/rec"))[0] == 200
    assert recording.keys == [one, two, two, two, two]
    metrics = await (await gw.get("/metrics")).text()
    assert (
        'gateway_provider_cooldowns_total{provider="rec",reason="key_rate_limited"} 1.0' in metrics
    )
    assert all(secret not in metrics for secret in KEYS.values())


async def test_every_key_rate_limited_is_a_503_with_retry_after(
    gw: TestClient, recording: RecordingProvider
) -> None:
    recording.behaviour = lambda used, n: web.json_response(
        {"error": {"message": f"slow down, {used}"}}, status=429, headers={"Retry-After": "12"}
    )
    _, key = await new_account(gw, purchase="1.00")
    resp = await gw.post("/api/v1/chat/completions", json=chat("test/rec"), headers=bearer(key))
    text = await resp.text()
    assert resp.status == 503 and resp.headers["Retry-After"] == "12"
    assert len(recording.keys) == 2  # each key once, then no more
    assert all(secret not in text for secret in KEYS.values())  # the provider quoted the key


async def test_a_failing_provider_cools_down_and_comes_back(
    redis_url: str, provider: ThreadedServer, recording: RecordingProvider
) -> None:
    recording.behaviour = lambda used, n: web.json_response({"error": {}}, status=500)
    client = await _gateway(redis_url, provider.url, recording, provider_cooldown_seconds=0.5)
    try:
        _, key = await new_account(client, purchase="1.00")
        status, record = await _ask(client, key, "test/rec-then-sim")
        assert status == 200 and record["provider_name"] == "sim"
        assert [a["status"] for a in record["failed_attempts"]] == [500]
        status, record = await _ask(client, key, "test/rec-then-sim")  # rec cools: sim first
        assert status == 200 and record["failed_attempts"] == []
        assert len(recording.keys) == 1
        await asyncio.sleep(0.6)
        recording.behaviour = lambda used, n: None  # recovered
        status, record = await _ask(client, key, "test/rec-then-sim")
        assert status == 200 and record["provider_name"] == "rec"
        assert len(recording.keys) == 2
    finally:
        await client.close()


async def test_retry_rounds_are_bounded_and_skip_refusals(
    redis_url: str, provider: ThreadedServer, recording: RecordingProvider
) -> None:
    def fails_twice(used: str, n: int) -> web.Response | None:
        return web.json_response({"error": {"message": "oops"}}, status=502) if n <= 2 else None

    recording.behaviour = fails_twice
    without = await _gateway(redis_url, provider.url, recording, provider_cooldown_seconds=0)
    try:
        _, key = await new_account(without, purchase="1.00")
        assert (await _ask(without, key, "test/rec"))[0] == 502  # no retries by default
    finally:
        await without.close()
    recording.keys.clear()
    recording.behaviour = fails_twice
    with_retries = await _gateway(
        redis_url, provider.url, recording, upstream_retries=2, provider_cooldown_seconds=0
    )
    try:
        _, key = await new_account(with_retries, purchase="1.00")
        status, record = await _ask(with_retries, key, "test/rec")
        assert status == 200 and [a["status"] for a in record["failed_attempts"]] == [502, 502]
        assert len(recording.keys) == 3
        recording.keys.clear()
        recording.behaviour = lambda used, n: web.json_response(
            {"error": {"message": "context too long"}}, status=400
        )
        assert (await _ask(with_retries, key, "test/rec"))[0] == 400
        assert len(recording.keys) == 1  # a refusal of the request is not retried
    finally:
        await with_retries.close()


def test_retry_after_in_seconds_or_as_a_date() -> None:
    assert retry_after_seconds("30") == 30.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None
    now = [100.0]
    cooldowns = Cooldowns(5.0, clock=lambda: now[0])
    assert cooldowns.after("p", "m", 0, 429, "99999") == "key_rate_limited"
    assert cooldowns.cooling("p", "m", 1)
    now[0] += 600.0  # no cooldown outlasts ten minutes, whatever Retry-After says
    assert not cooldowns.cooling("p", "m", 1)


def test_a_provider_names_one_key_or_a_list() -> None:
    with pytest.raises(ValueError, match="either api_key_env or api_key_envs"):
        ProviderConfig(name="p", base_url="http://x", api_key_env="A", api_key_envs=("B",))
