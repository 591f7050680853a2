"""The `provider` preferences object (OpenRouter's shape) on a model with two live providers,
`sim` and `sim2` (the same simulated server under two names; `sim2` keeps what it is sent and
declares only `temperature`), and on `test/fallback` (`deadsim`, unreachable, then `sim`)."""

from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from config.catalog import ModelConfig, ProviderConfig
from gateway.app import create_app
from gateway.state import SERVICES
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
    test_catalog as catalog_for,
)


async def _served(
    client: TestClient, key: str, model: str, **fields: Any
) -> tuple[int, dict[str, Any]]:
    """The status, and the record of the request (or the error body)."""
    resp = await client.post(
        "/api/v1/chat/completions", json=chat(model, **fields), headers=bearer(key)
    )
    body = await resp.json()
    if resp.status != 200:
        return resp.status, body
    return 200, await generation_record(client, key, resp.headers["X-Generation-Id"])


@pytest.mark.parametrize(
    ("prefs", "expected"),
    [
        (None, "sim"),  # the catalog's order
        ({"order": ["sim2"]}, "sim2"),
        ({"order": ["nobody", "sim2", "sim"]}, "sim2"),
        ({"only": ["sim2"]}, "sim2"),
        ({"ignore": ["sim"]}, "sim2"),
        ({"data_collection": "deny", "order": ["sim2"]}, "sim"),  # sim2 keeps data
        ({"require_parameters": True, "order": ["sim2"]}, "sim"),  # top_p: sim2 lacks it
        ({"order": ["sim2"], "quantizations": ["fp8"], "zdr": False}, "sim2"),  # nothing to do
    ],
)
async def test_preferences_choose_the_provider(
    client: TestClient, prefs: dict[str, Any] | None, expected: str
) -> None:
    _, key = await new_account(client, purchase="1.00")
    fields: dict[str, Any] = {"top_p": 0.9}
    if prefs is not None:
        fields["provider"] = prefs
    status, record = await _served(client, key, "test/multi", **fields)
    assert status == 200, record
    assert record["provider_name"] == expected and record["failed_attempts"] == []


async def test_require_parameters_keeps_a_provider_that_declares_them(client: TestClient) -> None:
    _, key = await new_account(client, purchase="1.00")
    prefs = {"require_parameters": True, "order": ["sim2"]}
    status, record = await _served(client, key, "test/multi", temperature=0.5, provider=prefs)
    assert status == 200 and record["provider_name"] == "sim2"


async def test_no_allowed_provider_is_a_404_that_says_why(client: TestClient) -> None:
    _, key = await new_account(client, purchase="1.00")
    for prefs in (
        {"only": ["nobody"]},
        {"only": ["sim2"], "data_collection": "deny"},
        {"ignore": ["sim", "sim2"]},
        {"max_price": {"prompt": 0.1}},  # test/multi lists $0.15 a million prompt tokens
    ):
        status, body = await _served(client, key, "test/multi", provider=prefs)
        assert status == 404, (prefs, body)
        assert body["error"]["metadata"]["error_type"] == "no_endpoints"


async def test_max_price_passes_over_a_model_to_its_fallback(client: TestClient) -> None:
    _, key = await new_account(client, purchase="1.00")
    prefs = {"max_price": {"prompt": "0.1", "completion": 1}}
    status, record = await _served(
        client, key, "test/multi", models=["test/free:free"], provider=prefs
    )
    assert status == 200 and record["model"] == "test/free:free"
    assert record["total_cost_usd"] == "0.00" and record["failed_attempts"] == []
    within = {"max_price": {"prompt": 0.15, "completion": 0.6, "request": 0, "image": 0}}
    status, record = await _served(client, key, "test/multi", provider=within)
    assert status == 200 and record["model"] == "test/multi"


async def test_allow_fallbacks_false_tries_only_the_ordered_providers(client: TestClient) -> None:
    _, key = await new_account(client, purchase="1.00")
    status, record = await _served(client, key, "test/fallback")
    assert status == 200 and record["provider_name"] == "sim"
    assert record["failed_attempts"] == [
        {"model": "test/fallback", "provider": "deadsim", "status": "connect"}
    ]
    only_first = {"allow_fallbacks": False}
    status, body = await _served(client, key, "test/fallback", provider=only_first)
    assert status == 502 and body["error"]["metadata"]["provider_name"] == "deadsim"
    ordered = {"order": ["sim"], "allow_fallbacks": False}
    status, record = await _served(client, key, "test/fallback", provider=ordered)
    assert status == 200 and record["provider_name"] == "sim"


async def test_sort_by_latency_and_nitro_use_the_gateways_measurements(
    client: TestClient,
) -> None:
    _, key = await new_account(client, purchase="1.00")
    stats = client.app[SERVICES].upstream.stats
    await _served(client, key, "test/multi")
    assert stats.latency("sim") is not None  # measured from real traffic
    stats.observe("sim", 2.0, 100, 10.0)  # slow to start, 10 tokens a second
    stats.observe("sim2", 0.01, 100, 0.5)  # quick, 200 tokens a second
    for _ in range(20):  # sim's average drifts towards what it serves now, it stays slower
        stats.observe("sim", 2.0, 100, 10.0)
    status, record = await _served(client, key, "test/multi", provider={"sort": "latency"})
    assert status == 200 and record["provider_name"] == "sim2"
    status, record = await _served(client, key, "test/multi:nitro")
    assert status == 200 and record["provider_name"] == "sim2"
    assert record["model"] == "test/multi"
    status, record = await _served(client, key, "test/multi:floor")  # one price: as listed
    assert status == 200 and record["provider_name"] == "sim"


@pytest.mark.parametrize(
    ("prefs", "field"),
    [
        ("sim", "provider"),
        ({"order": "sim"}, "provider.order"),
        ({"only": [1]}, "provider.only"),
        ({"allow_fallbacks": "no"}, "provider.allow_fallbacks"),
        ({"sort": "cheapest"}, "provider.sort"),
        ({"data_collection": "never"}, "provider.data_collection"),
        ({"max_price": {"prompt": "lots"}}, "provider.max_price.prompt"),
        ({"max_price": {"completion": -1}}, "provider.max_price.completion"),
        ({"max_price": 5}, "provider.max_price"),
    ],
)
async def test_bad_preferences_are_400s(client: TestClient, prefs: Any, field: str) -> None:
    _, key = await new_account(client, purchase="1.00")
    status, body = await _served(client, key, "test/multi", provider=prefs)
    assert status == 400 and body["error"]["metadata"]["field"] == field


@pytest.fixture
def busy_provider() -> Iterator[ThreadedServer]:
    """A provider that is always rate limited."""

    async def busy(request: web.Request) -> web.Response:
        return web.json_response(
            {"error": {"message": "slow down"}}, status=429, headers={"Retry-After": "7"}
        )

    app = web.Application()
    app.router.add_post("/v1/chat/completions", busy)
    server = ThreadedServer(app).start()
    yield server
    server.stop()


@pytest.fixture
async def busy_client(
    redis_url: str, provider: ThreadedServer, busy_provider: ThreadedServer
) -> AsyncIterator[TestClient]:
    providers, models = catalog_for(provider.url)
    providers.append(ProviderConfig(name="busy", base_url=busy_provider.url + "/v1"))
    models += [
        ModelConfig(id="test/busy-first", providers=["busy", "sim"], pricing=PAID),
        ModelConfig(id="test/busy-only", provider="busy", pricing=PAID),
    ]
    settings = make_settings(redis_url, provider.url, providers=providers, models=models)
    async with TestClient(TestServer(create_app(settings), host="127.0.0.1")) as c:
        yield c


async def test_a_rate_limited_provider_gives_way_to_the_next(busy_client: TestClient) -> None:
    _, key = await new_account(busy_client, purchase="1.00")
    status, record = await _served(busy_client, key, "test/busy-first")
    assert status == 200 and record["provider_name"] == "sim"
    assert record["failed_attempts"] == [
        {"model": "test/busy-first", "provider": "busy", "status": 429}
    ]
    assert Decimal(record["total_cost_usd"]) > 0
    resp = await busy_client.post(
        "/api/v1/chat/completions", json=chat("test/busy-only"), headers=bearer(key)
    )
    assert resp.status == 503 and resp.headers["Retry-After"] == "7"  # the last one's answer


@pytest.fixture
async def weighted_client(redis_url: str, provider: ThreadedServer) -> AsyncIterator[TestClient]:
    providers, models = catalog_for(provider.url)
    models.append(
        ModelConfig(
            id="test/weighted",
            providers=["sim", "sim2"],
            upstream_model="sim-gpt",
            pricing=PAID,
            weights={"sim": 1, "sim2": 3},
        )
    )
    settings = make_settings(redis_url, provider.url, providers=providers, models=models)
    async with TestClient(TestServer(create_app(settings), host="127.0.0.1")) as c:
        yield c


async def test_weights_spread_the_first_try(weighted_client: TestClient) -> None:
    """sim2 weighs 3, sim 1: about three requests in four go to sim2 first (200 requests: the
    bounds are six standard deviations away); an `order` still wins."""
    _, key = await new_account(weighted_client, purchase="5.00")
    served = [(await _served(weighted_client, key, "test/weighted"))[1] for _ in range(200)]
    to_sim2 = sum(r["provider_name"] == "sim2" for r in served)
    assert 110 < to_sim2 < 190, to_sim2
    assert all(r["failed_attempts"] == [] for r in served)
    ordered = {"order": ["sim"]}
    for _ in range(10):
        _, record = await _served(weighted_client, key, "test/weighted", provider=ordered)
        assert record["provider_name"] == "sim"


def test_weights_name_the_models_providers() -> None:
    with pytest.raises(ValueError, match="does not list: other"):
        ModelConfig(id="m", providers=["a", "b"], weights={"a": 1, "other": 2})
    with pytest.raises(ValueError, match="at least one above 0"):
        ModelConfig(id="m", providers=["a", "b"], weights={"a": 0})


@pytest.fixture
async def apis_client(redis_url: str, provider: ThreadedServer) -> AsyncIterator[TestClient]:
    """`chatonly` serves chat alone; test/mixed has it first, then sim (every API)."""
    providers, models = catalog_for(provider.url)
    providers.append(ProviderConfig(name="chatonly", base_url=provider.url + "/v1", apis=("chat",)))
    models += [
        ModelConfig(
            id="test/chat-only", provider="chatonly", upstream_model="sim-gpt", pricing=PAID
        ),
        ModelConfig(
            id="test/mixed", providers=["chatonly", "sim"], upstream_model="sim-gpt", pricing=PAID
        ),
    ]
    settings = make_settings(redis_url, provider.url, providers=providers, models=models)
    async with TestClient(TestServer(create_app(settings), host="127.0.0.1")) as c:
        yield c


async def test_an_api_no_provider_serves_is_a_404_naming_it(apis_client: TestClient) -> None:
    _, key = await new_account(apis_client, purchase="1.00")
    embed = {"model": "test/chat-only", "input": "hi"}
    resp = await apis_client.post("/api/v1/embeddings", json=embed, headers=bearer(key))
    body = await resp.json()
    assert resp.status == 404 and body["error"]["metadata"]["api"] == "embeddings"
    assert "test/chat-only" in body["error"]["message"]
    assert (await _served(apis_client, key, "test/chat-only"))[0] == 200  # chat it serves
    resp = await apis_client.post(
        "/api/v1/embeddings", json={"model": "test/mixed", "input": "hi"}, headers=bearer(key)
    )
    record = await generation_record(apis_client, key, resp.headers["X-Generation-Id"])
    assert resp.status == 200 and record["provider_name"] == "sim"  # chatonly passed over
    assert record["failed_attempts"] == []
