"""A client that hangs up mid-stream is charged for what was generated until then, never more
than the same answer read to the end: the provider's own prompt count and its share of the
output when its usage can still be read within `cancelled_stream_usage_seconds`, else the likely
prompt count and one token per chunk sent; nothing when no output had been sent."""

import asyncio
import math
import signal
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from config.catalog import ModelConfig, ProviderConfig
from gateway.app import create_app
from gateway.runtime.redis_server import free_port
from metering.estimate import estimate_prompt
from tests.processes import answers, gateway_process, http_json, stop, wait_until
from tests.support import (
    ADMIN_TOKEN,
    COMPLETION_PRICE,
    PAID,
    PROMPT_PRICE,
    ThreadedServer,
    bearer,
    generation_record,
    make_settings,
    new_account,
)
from tests.support import test_catalog as catalog_of

PROVIDER_PROMPT_TOKENS = 12  # what the provider counts, far below the admission bound
WORD = "word "
PACE = 0.05  # seconds between the provider's chunks
ABORTED = web.AppKey("aborted", list)
CONTENT = (
    "Please write twenty words about the sea, one at a time, nothing else. Keep them short, "
    "plain and common; no punctuation, no numbers, no names, and no word twice in the answer."
)


async def _paced(request: web.Request) -> web.StreamResponse:
    """`paced-N`: N content chunks PACE apart, a finish chunk, then usage."""
    body = await request.json()
    words = int(str(body["model"]).split("-")[1])
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    try:
        for _ in range(words):
            chunk = {"id": "up", "choices": [{"index": 0, "delta": {"content": WORD}}]}
            await response.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
            await asyncio.sleep(PACE)
        done = {"id": "up", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        usage = {
            "id": "up",
            "choices": [],
            "usage": {
                "prompt_tokens": PROVIDER_PROMPT_TOKENS,
                "completion_tokens": words,
                "total_tokens": PROVIDER_PROMPT_TOKENS + words,
            },
        }
        for event in (done, usage):
            await response.write(b"data: " + orjson.dumps(event) + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
    except (ConnectionResetError, asyncio.CancelledError):
        request.app[ABORTED].append(words)
        raise
    return response


@pytest.fixture(scope="module")
def paced() -> Iterator[ThreadedServer]:
    app = web.Application()
    app[ABORTED] = []
    app.router.add_post("/v1/chat/completions", _paced)
    server = ThreadedServer(app).start()
    yield server
    server.stop()


def _catalog(provider_url: str, paced_url: str) -> dict[str, Any]:
    providers, models = catalog_of(provider_url)
    providers.append(ProviderConfig(name="paced", base_url=paced_url + "/v1"))
    for words in (20, 400):
        models.append(
            ModelConfig(
                id=f"test/paced-{words}",
                provider="paced",
                upstream_model=f"paced-{words}",
                pricing=PAID,
                max_output_tokens=1000,
            )
        )
    return {"providers": providers, "models": models}


@pytest.fixture
async def pc(
    redis_url: str, provider: ThreadedServer, paced: ThreadedServer
) -> AsyncIterator[TestClient]:
    settings = make_settings(
        redis_url,
        provider.url,
        cancelled_stream_usage_seconds=3.0,
        **_catalog(provider.url, paced.url),
    )
    async with TestClient(TestServer(create_app(settings), host="127.0.0.1")) as c:
        yield c


def _body(words: int) -> dict[str, Any]:
    return {
        "model": f"test/paced-{words}",
        "messages": [{"role": "user", "content": CONTENT}],
        "stream": True,
    }


async def _hang_up_after(client: TestClient, key: str, words: int, chunks: int) -> str:
    """Read `chunks` content events of a stream, then close the connection."""
    resp = await client.post("/api/v1/chat/completions", json=_body(words), headers=bearer(key))
    assert resp.status == 200
    generation_id = resp.headers["X-Generation-Id"]
    seen = 0
    while seen < chunks:
        line = await resp.content.readline()
        if line.startswith(b"data: {") and b'"content"' in line:
            seen += 1
    resp.close()
    return generation_id


def _cost(record: dict[str, Any]) -> Decimal:
    return record["tokens_prompt"] * PROMPT_PRICE + record["tokens_completion"] * COMPLETION_PRICE


async def test_a_hung_up_stream_never_costs_more_than_the_whole_answer(
    pc: TestClient, paced: ThreadedServer
) -> None:
    _, key = await new_account(pc, purchase="1.00")
    resp = await pc.post("/api/v1/chat/completions", json=_body(20), headers=bearer(key))
    await resp.read()
    whole = await generation_record(pc, key, resp.headers["X-Generation-Id"])
    assert whole["tokens_prompt"] == PROVIDER_PROMPT_TOKENS and whole["tokens_completion"] == 20
    whole_cost = Decimal(whole["total_cost_usd"])
    assert whole_cost == _cost(whole)
    for chunks in (0, 1, 5, 12):
        record = await generation_record(pc, key, await _hang_up_after(pc, key, 20, chunks))
        cost = Decimal(record["total_cost_usd"])
        assert record["cancelled"] is True, record
        assert cost <= whole_cost, (chunks, record)
        if record["usage_source"] == "none":  # nothing had been sent yet: nothing charged
            assert chunks == 0 and cost == 0, record
            continue
        # The provider's own prompt count, and its output tokens in the share the client had.
        assert record["usage_source"] == "provider_share", record
        assert record["tokens_prompt"] == PROVIDER_PROMPT_TOKENS, record
        assert max(chunks, 1) <= record["tokens_completion"] < 20, (chunks, record)
        assert cost == _cost(record) < whole_cost


async def test_without_usage_in_time_the_likely_prompt_is_charged(
    redis_url: str, provider: ThreadedServer, paced: ThreadedServer
) -> None:
    """A long stream's usage does not come within the window: the prompt is charged at the
    likely count (about four characters a token), not at the reservation's bound, and the
    provider is stopped once the window is over."""
    settings = make_settings(
        redis_url,
        provider.url,
        cancelled_stream_usage_seconds=0.3,
        **_catalog(provider.url, paced.url),
    )
    async with TestClient(TestServer(create_app(settings), host="127.0.0.1")) as c:
        _, key = await new_account(c, purchase="1.00")
        aborted_before = len(paced.app[ABORTED])
        record = await generation_record(c, key, await _hang_up_after(c, key, 400, 5))
        body = _body(400)
        estimate = estimate_prompt(body, len(orjson.dumps(body)))
        assert record["usage_source"] == "estimated" and record["cancelled"] is True
        assert record["tokens_prompt"] == estimate.likely < estimate.tokens
        assert estimate.likely == math.ceil(len(CONTENT + "user") / 4) + 3
        assert 5 <= record["tokens_completion"] < 40, record  # 400 were coming, 50 ms apart
        for _ in range(100):
            if len(paced.app[ABORTED]) > aborted_before:
                break
            await asyncio.sleep(0.05)
        assert paced.app[ABORTED][aborted_before:] == [400]


def test_a_real_gateway_bills_a_hung_up_stream_from_the_providers_usage(
    tmp_path: Path, paced: ThreadedServer
) -> None:
    """`gateway serve` as users run it (no handler cancellation: the hang-up shows as a failed
    write), a raw client that reads two chunks and closes."""
    port = free_port()
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'[[providers]]\nname = "paced"\nbase_url = "{paced.url}/v1"\n\n'
        '[[models]]\nid = "test/paced-20"\nprovider = "paced"\nupstream_model = "paced-20"\n'
        'max_output_tokens = 1000\n[models.pricing]\nprompt = "0.00000015"\n'
        'completion = "0.0000006"\n'
    )
    proc = gateway_process(
        ["serve", "--config", str(config), "--port", str(port)],
        {"GATEWAY_DATA_DIR": str(tmp_path / "data"), "GATEWAY_ADMIN_TOKEN": ADMIN_TOKEN},
    )
    url = f"http://127.0.0.1:{port}"
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"}
    try:
        assert wait_until(lambda: answers(url + "/readyz"), 30), "gateway serve did not start"
        _, account = http_json(url + "/admin/v1/accounts", b'{"name": "c"}', admin)
        grant = orjson.dumps({"amount": "1.00", "method": "card", "idempotency_key": "c-1"})
        http_json(f"{url}/admin/v1/accounts/{account['id']}/purchases", grant, admin)
        _, made = http_json(f"{url}/admin/v1/accounts/{account['id']}/keys", b'{"name":"k"}', admin)
        key = made["key"]
        generation_id = asyncio.run(_raw_hang_up(port, key))
        record: dict[str, Any] = {}
        for _ in range(100):
            status, found = http_json(
                f"{url}/api/v1/generation?id={generation_id}", headers=bearer(key)
            )
            if status == 200:
                record = found["data"]
                break
            wait_until(lambda: False, 0.05)
        assert record.get("cancelled") is True, record
        assert record["usage_source"] == "provider_share", record
        assert record["tokens_prompt"] == PROVIDER_PROMPT_TOKENS
        assert 2 <= record["tokens_completion"] < 20
    finally:
        stop(proc, signal.SIGTERM)


async def _raw_hang_up(port: int, key: str) -> str:
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        resp = await session.post(
            f"http://127.0.0.1:{port}/api/v1/chat/completions",
            json=_body(20),
            headers=bearer(key),
        )
        generation_id = resp.headers["X-Generation-Id"]
        seen = 0
        while seen < 2:
            line = await resp.content.readline()
            if b'"content"' in line:
                seen += 1
        resp.close()
    return generation_id
