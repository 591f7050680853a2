"""What the official SDKs do with the gateway's refusals: a 429 that cannot succeed soon (a free
model's daily limit) and a 402 carry `x-should-retry: false`, so the Node and Python `openai`
clients raise at once after one request instead of sleeping until midnight UTC (Node 6.x honours
any Retry-After); a limit that reopens within a minute stays retryable and the SDK gets through."""

import asyncio
import json
import os
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

import openai
import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app
from tests.support import ThreadedServer, bearer, make_settings, new_account

NODE_DIR = Path(__file__).parent.parent / "node"
NODE_READY = shutil.which("node") is not None and (NODE_DIR / "node_modules" / "openai").is_dir()
if not NODE_READY and os.environ.get("CI"):
    raise RuntimeError(
        "the Node openai SDK is missing (make test installs it with npm into tests/node)"
    )

LIMITS = """\
[[limits]]
name = "free-per-day"
description = "Free model daily limit of {limit}"
match = "free"
unit = "day"
requests = 1

[[limits]]
name = "paid-per-second"
description = "Paid requests limit of {limit} per second"
scope = "key"
match = { model = "test/paid" }
unit = "second"
requests = 1
"""
COMPLETIONS = 'gateway_http_requests_total{route="/api/v1/chat/completions"'


@pytest.fixture
async def rc(redis_url: str, provider: ThreadedServer, tmp_path: Path) -> AsyncIterator[TestClient]:
    limits = tmp_path / "limits.toml"
    limits.write_text(LIMITS)
    app = create_app(make_settings(redis_url, provider.url, limits_file=limits))
    async with TestClient(TestServer(app, host="127.0.0.1")) as c:
        yield c


async def _completion_requests(c: TestClient) -> float:
    """Completion requests the gateway has answered, by its own metrics."""
    text = await (await c.get("/metrics")).text()
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(COMPLETIONS)
    )


async def _exhausted_free_key(c: TestClient) -> str:
    _, key = await new_account(c)
    body = {"model": "test/free:free", "messages": [{"role": "user", "content": "hi"}]}
    assert (await c.post("/api/v1/chat/completions", json=body, headers=bearer(key))).status == 200
    refused = await c.post("/api/v1/chat/completions", json=body, headers=bearer(key))
    assert refused.status == 429
    assert int(refused.headers["Retry-After"]) > 0  # honest: until midnight UTC
    assert refused.headers["x-should-retry"] == "false"
    return key


async def _python_call(c: TestClient, key: str, model: str) -> tuple[BaseException | None, float]:
    client = openai.AsyncOpenAI(api_key=key, base_url=str(c.make_url("/api/v1")))  # 2 retries
    started = time.monotonic()
    try:
        await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "Hello"}]
        )
        failure: BaseException | None = None
    except openai.APIStatusError as exc:
        failure = exc
    finally:
        await client.close()
    return failure, time.monotonic() - started


async def test_python_sdk_gives_up_at_once_on_the_daily_limit_and_on_a_402(rc: TestClient) -> None:
    key = await _exhausted_free_key(rc)
    before = await _completion_requests(rc)
    failure, elapsed = await _python_call(rc, key, "test/free:free")
    assert isinstance(failure, openai.RateLimitError) and elapsed < 2.0
    assert await _completion_requests(rc) - before == 1

    _, broke = await new_account(rc)  # no credits: a paid model is a 402
    before = await _completion_requests(rc)
    failure, elapsed = await _python_call(rc, broke, "test/paid")
    assert isinstance(failure, openai.APIStatusError) and failure.status_code == 402
    assert failure.response.headers["x-should-retry"] == "false" and elapsed < 2.0
    assert await _completion_requests(rc) - before == 1


async def test_a_limit_that_reopens_within_seconds_stays_retryable(rc: TestClient) -> None:
    _, key = await new_account(rc, purchase="1.00")
    body = {"model": "test/paid", "messages": [{"role": "user", "content": "hi"}]}
    assert (await rc.post("/api/v1/chat/completions", json=body, headers=bearer(key))).status == 200
    refused = await rc.post("/api/v1/chat/completions", json=body, headers=bearer(key))
    if refused.status == 200:  # the second ended between the two: use it up again
        refused = await rc.post("/api/v1/chat/completions", json=body, headers=bearer(key))
    assert refused.status == 429 and int(refused.headers["Retry-After"]) <= 1
    assert refused.headers["x-should-retry"] == "true"
    await rc.post("/api/v1/chat/completions", json=body, headers=bearer(key))  # this second's
    failure, _ = await _python_call(rc, key, "test/paid")  # refused, then retried: through
    assert failure is None


async def _node_call(c: TestClient, key: str, model: str) -> dict[str, object]:
    env = {**os.environ, "API_KEY": key, "BASE_URL": str(c.make_url("/api/v1")), "MODEL": model}
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(NODE_DIR / "openai_call.mjs"),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    result: dict[str, object] = json.loads(out.decode().strip().splitlines()[-1])
    return result


@pytest.mark.skipif(not NODE_READY, reason="node or the Node openai SDK is not installed")
async def test_node_sdk_gives_up_at_once_on_the_daily_limit_and_on_a_402(rc: TestClient) -> None:
    key = await _exhausted_free_key(rc)
    before = await _completion_requests(rc)
    result = await _node_call(rc, key, "test/free:free")
    assert result["status"] == 429 and int(str(result["ms"])) < 2000, result
    assert await _completion_requests(rc) - before == 1

    _, broke = await new_account(rc)
    before = await _completion_requests(rc)
    result = await _node_call(rc, broke, "test/paid")
    assert result["status"] == 402 and int(str(result["ms"])) < 2000, result
    assert await _completion_requests(rc) - before == 1
