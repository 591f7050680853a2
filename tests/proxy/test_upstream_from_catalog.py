"""The upstream address comes only from the catalog: no model name, header or body field can make
the gateway call another host. A second real HTTP server on loopback plays the attacker's host
and counts every connection and request it gets. (An egress proxy is the operator's choice, from
the catalog or the environment: tests/proxy/test_egress_proxy.py. Here the environment names
none, and `ALL_PROXY`, which the gateway does not read, names the attacker.)"""

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app
from tests.support import ThreadedServer, bearer, chat, make_settings, new_account

HITS = web.AppKey("hits", list)


async def _record(request: web.Request) -> web.Response:
    request.app[HITS].append(f"{request.method} {request.path_qs}")
    return web.json_response({"error": {"message": "the attacker's host was called"}}, status=418)


@pytest.fixture(scope="module")
def attacker() -> Iterator[ThreadedServer]:
    app = web.Application()
    app[HITS] = []
    app.router.add_route("*", "/{tail:.*}", _record)
    server = ThreadedServer(app).start()
    yield server
    server.stop()


@pytest.fixture
async def uc(
    redis_url: str,
    provider: ThreadedServer,
    attacker: ThreadedServer,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[TestClient]:
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ALL_PROXY", attacker.url)
    app = create_app(make_settings(redis_url, provider.url))
    async with TestClient(TestServer(app, host="127.0.0.1")) as c:
        yield c


async def _provider_requests(provider: ThreadedServer) -> int:
    async with aiohttp.ClientSession() as session:  # trust_env is off: no proxy here either
        stats = await (await session.get(provider.url + "/_sim/stats")).json()
    return int(stats["requests"])


def _model_names(attacker: str) -> list[str]:
    host = attacker.removeprefix("http://")
    return [
        attacker,
        attacker + "/v1",
        attacker + "/v1/chat/completions",
        f"//{host}/v1",
        f"{host}/v1",
        "../",
        "../../",
        f"../../{host}",
        "test/../../x",
        f"test/paid/../../../{host}",
        f"@{host}",
        f"test/paid@{host}",
        f"user:pass@{host}/v1",
        f"test/paid#{attacker}",
        f"test/paid?base_url={attacker}",
        f"test/paid {attacker}",
        f"sim/{attacker}",
        f"test/paid\r\nHost: {host}",
        "test/paid/",
        "TEST/PAID",
        " test/paid",
        "test/paid\x00",
        "test%2Fpaid",
        "file:///etc/passwd",
        f"ftp://{host}/",
    ]


async def test_no_model_name_reaches_another_host(
    uc: TestClient, provider: ThreadedServer, attacker: ThreadedServer
) -> None:
    _, key = await new_account(uc, purchase="5.00")
    hits, sent = len(attacker.app[HITS]), await _provider_requests(provider)
    for name in _model_names(attacker.url):
        for url in ("/api/v1/chat/completions", "/api/v1/completions"):
            body: dict[str, Any] = (
                chat(name) if "chat" in url else {"model": name, "prompt": "Hello"}
            )
            resp = await uc.post(url, json=body, headers=bearer(key))
            error = (await resp.json())["error"]
            assert resp.status == 404, (name, error)
            assert error["metadata"]["error_type"] == "model_not_found", name
    assert len(attacker.app[HITS]) == hits
    assert await _provider_requests(provider) == sent  # refused before anything was sent


def _steering_headers(attacker: str) -> dict[str, str]:
    host = attacker.removeprefix("http://")
    return {
        "Host": host,
        "X-Forwarded-Host": host,
        "X-Forwarded-Server": host,
        "X-Forwarded-Proto": "http",
        "X-Forwarded-Port": host.rsplit(":", 1)[1],
        "X-Forwarded-For": "127.0.0.1",
        "Forwarded": f"for=127.0.0.1;host={host};proto=http",
        "X-Original-URL": attacker + "/v1/chat/completions",
        "X-Rewrite-URL": attacker + "/v1/chat/completions",
        "X-Upstream": attacker,
        "X-Upstream-Url": attacker + "/v1",
        "X-Upstream-Host": host,
        "X-Provider-Url": attacker + "/v1",
        "X-Base-Url": attacker + "/v1",
        "X-Target": attacker,
        "X-Host": host,
        "OpenAI-Base-URL": attacker + "/v1",
        "Api-Base": attacker + "/v1",
        "Proxy": attacker,
        "Via": f"1.1 {host}",
        "Referer": attacker,
        "Origin": attacker,
    }


def _steering_fields(attacker: str) -> dict[str, Any]:
    return {
        "base_url": attacker + "/v1",
        "api_base": attacker + "/v1",
        "url": attacker + "/v1/chat/completions",
        "endpoint": attacker + "/v1/chat/completions",
        "upstream": attacker,
        "upstream_url": attacker,
        "host": attacker.removeprefix("http://"),
        "provider": {
            "url": attacker + "/v1",
            "base_url": attacker + "/v1",
            "order": ["attacker", "sim"],
            "only": ["attacker"],
        },
        "providers": [{"name": "attacker", "base_url": attacker + "/v1"}],
        "models": [attacker + "/v1", "test/paid"],
        "route": "fallback",
        "extra_headers": {"Host": attacker.removeprefix("http://")},
        "extra_body": {"base_url": attacker + "/v1"},
        "webhook": attacker,
        "callback_url": attacker,
        "user": attacker,
    }


async def test_no_header_or_body_field_reaches_another_host(
    uc: TestClient, provider: ThreadedServer, attacker: ThreadedServer
) -> None:
    _, key = await new_account(uc, purchase="5.00")
    hits, sent = len(attacker.app[HITS]), await _provider_requests(provider)
    headers = _steering_headers(attacker.url)
    fields = _steering_fields(attacker.url)
    calls = 0
    for stream in (False, True):
        # Every header and every field at once, then each one alone.
        cases: list[tuple[dict[str, str], dict[str, Any]]] = [(headers, fields)]
        cases += [({name: value}, {}) for name, value in headers.items()]
        cases += [({}, {name: value}) for name, value in fields.items()]
        for extra_headers, extra_fields in cases:
            resp = await uc.post(
                "/api/v1/chat/completions",
                json=chat("test/paid", stream=stream, **extra_fields),
                headers={**extra_headers, **bearer(key)},
            )
            text = await resp.text()
            if "provider" in extra_fields and resp.status == 404:
                # Preferences naming only the attacker's "provider": no catalog provider is left.
                assert '"error_type":"no_endpoints"' in text, text
                continue
            assert resp.status == 200, (extra_headers, extra_fields, text)
            assert "simulated reply" in text or "simulated" in text, text[:200]
            calls += 1
    await asyncio.sleep(0.1)
    assert attacker.app[HITS][hits:] == []
    assert await _provider_requests(provider) - sent == calls  # every one went to the catalog's
    async with aiohttp.ClientSession() as session:  # and the attacker's counter does count
        await session.post(attacker.url + "/v1/chat/completions", json={})
    assert len(attacker.app[HITS]) == hits + 1
