"""The catalog reloads while the gateway runs, from its config file: a price changed, a model
added, a provider's keys changed; a bad file is refused and the catalog in force stays; a request
in flight keeps the price it was admitted at."""

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from config.settings import load_settings
from gateway.app import create_app
from gateway.catalog import CATALOG
from tests.support import ADMIN_TOKEN, ThreadedServer, bearer, chat, generation_record, new_account

CONFIG = """
redis_url = "{redis_url}"
admin_token = "{admin}"
data_dir = "{data_dir}"
limits_reload_seconds = 0.05

[[providers]]
name = "sim"
base_url = "{provider}/v1"
api_key_env = "SIM_PROVIDER_KEY"

[[models]]
id = "test/a"
provider = "sim"
upstream_model = "{upstream}"
[models.pricing]
prompt = "{prompt}"
completion = "0.000001"
"""


def _write(path: Path, values: dict[str, str], **changes: str) -> None:
    text = CONFIG.format(**{**values, **changes})
    path.write_text(text + changes.get("extra", ""))
    stamp = path.stat().st_mtime_ns + 1_000_000_000  # a change the watcher sees, however quick
    os.utime(path, ns=(stamp, stamp))


@pytest.fixture
async def reloading(
    tmp_path: Path, redis_url: str, provider: ThreadedServer
) -> AsyncIterator[tuple[TestClient, Path, dict[str, str]]]:
    values = {
        "redis_url": redis_url,
        "admin": ADMIN_TOKEN,
        "data_dir": str(tmp_path / "data"),
        "provider": provider.url,
        "upstream": "sim-gpt",
        "prompt": "0.000001",
    }
    path = tmp_path / "gateway.toml"
    _write(path, values)
    app = create_app(load_settings(path))
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield client, path, values


async def _models(client: TestClient) -> set[str]:
    return {m["id"] for m in (await (await client.get("/api/v1/models")).json())["data"]}


async def _until(client: TestClient, want: set[str]) -> None:
    for _ in range(100):
        if await _models(client) == want:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the catalog never became {want}")


async def _cost(client: TestClient, key: str, model: str) -> tuple[Decimal, int]:
    resp = await client.post("/api/v1/chat/completions", json=chat(model), headers=bearer(key))
    assert resp.status == 200, await resp.text()
    record = await generation_record(client, key, resp.headers["X-Generation-Id"])
    return Decimal(record["total_cost_usd"]), record["tokens_prompt"]


async def test_a_changed_file_is_in_force_at_once(
    reloading: tuple[TestClient, Path, dict[str, str]],
) -> None:
    client, path, values = reloading
    _, key = await new_account(client, purchase="1.00")
    cost, prompt = await _cost(client, key, "test/a")
    assert cost == prompt * Decimal("0.000001") + 16 * Decimal("0.000001")
    extra = '\n[[models]]\nid = "test/b"\nprovider = "sim"\nupstream_model = "sim-gpt"\n'
    _write(path, values, prompt="0.000002", extra=extra)
    await _until(client, {"test/a", "test/b"})
    cost, prompt = await _cost(client, key, "test/a")
    assert cost == prompt * Decimal("0.000002") + 16 * Decimal("0.000001")
    assert (await _cost(client, key, "test/b"))[0] == 0  # listed without prices: free


async def test_a_bad_file_is_refused_and_the_catalog_stays(
    reloading: tuple[TestClient, Path, dict[str, str]], caplog: pytest.LogCaptureFixture
) -> None:
    client, path, _ = reloading
    holder = client.app[CATALOG]
    with caplog.at_level(logging.ERROR, logger="gateway.catalog"):
        path.write_text(path.read_text().replace('prompt = "0.000001"', "prompt = 0.000001"))
        assert holder.reload() is False
    refused = [r for r in caplog.records if "catalog refused" in r.getMessage()]
    assert len(refused) == 1 and "decimal string" in refused[0].getMessage()
    assert await _models(client) == {"test/a"}
    _, key = await new_account(client, purchase="1.00")
    cost, prompt = await _cost(client, key, "test/a")
    assert cost == prompt * Decimal("0.000001") + 16 * Decimal("0.000001")


async def test_a_request_in_flight_keeps_its_price(
    reloading: tuple[TestClient, Path, dict[str, str]],
) -> None:
    client, path, values = reloading
    _write(path, values, upstream="sim-slow")  # the provider waits before answering
    assert client.app[CATALOG].reload()
    _, key = await new_account(client, purchase="1.00")
    slow = asyncio.ensure_future(_cost(client, key, "test/a"))
    await asyncio.sleep(0.5)  # admitted, waiting for the provider
    _write(path, values, upstream="sim-gpt", prompt="0.000009")
    assert client.app[CATALOG].reload()
    cost, prompt = await slow
    assert cost == prompt * Decimal("0.000001") + 16 * Decimal("0.000001")
    cost, prompt = await _cost(client, key, "test/a")  # the next one: the new price
    assert cost == prompt * Decimal("0.000009") + 16 * Decimal("0.000001")
