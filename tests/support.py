"""Helpers shared by the tests: real servers in threads, a test catalog, admin calls."""

import asyncio
import tempfile
import threading
from decimal import Decimal
from typing import Any

from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient

from config.catalog import Api, ModelConfig, Pricing, ProviderConfig
from config.settings import Settings
from metering.usage import UsageRecord

ADMIN_TOKEN = "test-admin-token-5f1e"
PROVIDER_SECRET = "sk-provider-secret-never-shown-7d3a"
PROMPT_PRICE = Decimal("0.00000015")
COMPLETION_PRICE = Decimal("0.0000006")
IMAGE_PRICE = Decimal("0.001")  # per input image, for test/vision
CACHE_READ_PRICE = Decimal("0.000000015")  # test/cache: a tenth of the prompt price
CACHE_WRITE_PRICE = Decimal("0.0000001875")  # and a quarter more than it


class ThreadedServer:
    """An aiohttp app served from its own thread and event loop (a real server on loopback)."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._runner: web.AppRunner | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._start())
        self._ready.set()
        self._loop.run_forever()

    async def _start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        assert site._server is not None
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def start(self) -> "ThreadedServer":
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("test server did not start")
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        async def _stop() -> None:
            if self._runner is not None:
                await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(_stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


PAID = Pricing(prompt=PROMPT_PRICE, completion=COMPLETION_PRICE)
PRICEY = Pricing(prompt=PROMPT_PRICE * 100, completion=COMPLETION_PRICE * 100)
VISION = Pricing(prompt=PROMPT_PRICE, completion=COMPLETION_PRICE, image=IMAGE_PRICE)
CACHED = Pricing(
    prompt=PROMPT_PRICE,
    completion=COMPLETION_PRICE,
    input_cache_read=CACHE_READ_PRICE,
    input_cache_write=CACHE_WRITE_PRICE,
)
ALL_APIS: tuple[Api, ...] = ("chat", "completions", "embeddings", "responses", "messages")


def test_catalog(provider_url: str) -> tuple[list[ProviderConfig], list[ModelConfig]]:
    """Models that map to the simulated provider's behaviours (see
    gateway.runtime.simulated_provider)."""
    providers = [
        ProviderConfig(
            name="sim",
            base_url=provider_url + "/v1",
            api_key_env="SIM_PROVIDER_KEY",
            simulated=True,
            apis=ALL_APIS,
        ),
        ProviderConfig(
            name="deadsim", base_url="http://127.0.0.1:9/v1", simulated=True, apis=ALL_APIS
        ),
        # The same simulated server under another name: one that keeps what it is sent and
        # declares only some parameters (provider preferences' tests).
        ProviderConfig(
            name="sim2",
            base_url=provider_url + "/v1",
            api_key_env="SIM_PROVIDER_KEY",
            simulated=True,
            collects_data=True,
            supported_parameters=("temperature",),
            apis=ALL_APIS,
        ),
    ]

    def paid(id_: str, upstream: str, **kw: Any) -> ModelConfig:
        return ModelConfig(id=id_, provider="sim", upstream_model=upstream, pricing=PAID, **kw)

    models = [
        paid("test/paid", "sim-gpt", max_output_tokens=1000),
        ModelConfig(
            id="test/vision",
            provider="sim",
            upstream_model="sim-gpt",
            pricing=VISION,
            max_output_tokens=100,
        ),
        ModelConfig(id="test/free:free", provider="sim", upstream_model="sim-free"),
        paid("test/slow", "sim-slow"),
        paid("test/delay", "sim-delay", max_output_tokens=100),
        paid("test/error-500", "sim-error-500"),
        paid("test/error-400", "sim-error-400"),
        paid("test/error-402", "sim-error-402"),
        paid("test/error-429", "sim-error-429"),
        ModelConfig(id="test/broken:free", provider="sim", upstream_model="sim-error-500"),
        paid("test/garbage", "sim-garbage"),
        paid("test/drop", "sim-drop"),
        paid("test/nousage", "sim-nousage"),
        paid("test/overuse", "sim-overuse"),
        paid("test/slowstream", "sim-slowstream", max_output_tokens=1000),
        paid("test/trickle", "sim-trickle", max_output_tokens=100),
        paid("test/hold", "sim-hold", max_output_tokens=1000),
        paid("test/empty", "sim-empty"),
        ModelConfig(
            id="test/pricey",
            provider="sim",
            upstream_model="sim-gpt",
            pricing=PRICEY,
            max_output_tokens=1000,
        ),
        paid("test/errorchunk", "sim-errorchunk"),
        ModelConfig(
            id="test/cache",
            provider="sim",
            upstream_model="sim-cache",
            pricing=CACHED,
            max_output_tokens=1000,
        ),
        ModelConfig(
            id="test/fallback", providers=["deadsim", "sim"], upstream_model="sim-gpt", pricing=PAID
        ),
        ModelConfig(id="test/unreachable", provider="deadsim", pricing=PAID),
        ModelConfig(
            id="test/multi", providers=["sim", "sim2"], upstream_model="sim-gpt", pricing=PAID
        ),
    ]
    return providers, models


def make_settings(redis_url: str, provider_url: str, **overrides: Any) -> Settings:
    providers, models = test_catalog(provider_url)
    values: dict[str, Any] = {
        "data_dir": tempfile.mkdtemp(prefix="gw-test-data-"),
        # The tests' clients share the gateway's event loop; the 250 ms production bound on
        # admission is tested on its own (test_journal) and would only add noise elsewhere.
        "admission_timeout_seconds": 5.0,
        "redis_url": redis_url,
        "admin_token": ADMIN_TOKEN,
        "providers": providers,
        "models": models,
        "upstream_read_timeout": 5.0,
        "upstream_connect_timeout": 2.0,
    }
    values.update(overrides)
    return Settings(**values)


def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def new_account(
    client: TestClient, *, purchase: str | None = None, grant: str | None = None
) -> tuple[str, str]:
    """(account id, API key secret), with an optional card purchase or grant."""
    body: dict[str, Any] = {"name": "test"}
    if grant is not None:
        body["grant"] = grant
    resp = await client.post("/admin/v1/accounts", json=body, headers=admin_headers())
    assert resp.status == 201, await resp.text()
    account_id = (await resp.json())["id"]
    if purchase is not None:
        resp = await client.post(
            f"/admin/v1/accounts/{account_id}/purchases",
            json={"amount": purchase, "method": "card", "idempotency_key": f"init-{account_id}"},
            headers=admin_headers(),
        )
        assert resp.status == 201, await resp.text()
    resp = await client.post(
        f"/admin/v1/accounts/{account_id}/keys", json={"name": "k"}, headers=admin_headers()
    )
    assert resp.status == 201, await resp.text()
    return account_id, (await resp.json())["key"]


async def account_state(client: TestClient, account_id: str) -> dict[str, Any]:
    resp = await client.get(f"/admin/v1/accounts/{account_id}", headers=admin_headers())
    assert resp.status == 200
    data: dict[str, Any] = await resp.json()
    return data


async def settled_state(client: TestClient, account_id: str) -> dict[str, Any]:
    """The account once no reservation is held (a hung-up stream settles a little later)."""
    for _ in range(100):
        state = await account_state(client, account_id)
        if state["reserved"] == "0.00":
            return state
        await asyncio.sleep(0.05)
    raise AssertionError(f"account {account_id} still holds a reservation")


async def hang_up_after(resp: ClientResponse, marker: bytes, events: int) -> None:
    """Read a stream until `events` data lines carrying `marker` came, then hang up."""
    seen = 0
    async for line in resp.content:
        if line.startswith(b"data: ") and marker in line:
            seen += 1
            if seen == events:
                break
    resp.close()


async def generation_record(client: TestClient, key: str, generation_id: str) -> dict[str, Any]:
    """A request's usage record, once its settlement has landed (within 10 s)."""
    for _ in range(200):
        resp = await client.get(f"/api/v1/generation?id={generation_id}", headers=bearer(key))
        if resp.status == 200:
            data: dict[str, Any] = (await resp.json())["data"]
            return data
        await asyncio.sleep(0.05)
    raise AssertionError(f"no record for {generation_id}")


def chat(model: str, content: str = "Hello there", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


def usage_record(account_id: str, key_hash: str, generation_id: str, cost: int) -> UsageRecord:
    """A settled request's record as a store test needs it: one token each way, `cost` charged."""
    return UsageRecord(
        id=generation_id,
        account_id=account_id,
        key_hash=key_hash,
        model="m",
        provider_name="p",
        upstream_model="u",
        tokens_prompt=1,
        tokens_completion=1,
        native_tokens_cached=0,
        native_tokens_reasoning=0,
        cost=cost,
        latency_ms=1,
        generation_time_ms=1,
        streamed=False,
        cancelled=False,
        finish_reason="stop",
        status=200,
        usage_source="provider",
        created_at="2026-11-27T00:00:00.000Z",
        created_at_ms=0,
    )
