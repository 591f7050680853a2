"""Providers reached through an egress proxy (issue 20): an https provider through a CONNECT
tunnel with TLS end to end, an http one in absolute form, proxy credentials from the URL, the
environment's HTTPS_PROXY / HTTP_PROXY / NO_PROXY, and a `base_url` that keeps its query and
refuses credentials."""

import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from config.catalog import ProviderConfig
from gateway.app import create_app
from gateway.proxy.forward.egress_proxy import bypassed, parse_proxy, proxy_for
from gateway.proxy.forward.provider_client import ProviderPool
from gateway.proxy.forward.provider_connection import UpstreamBroken
from tests.egress_proxy_server import EgressProxyServer
from tests.processes import gateway_process
from tests.proxy.test_provider_tls import OPENSSL, Certificates, server_context
from tests.scripted_provider import ScriptedProvider, json_answer, read_all, sends
from tests.support import ThreadedServer, bearer, chat, make_settings, new_account


@pytest.fixture
def provider_url(provider: ThreadedServer) -> str:
    return provider.url


HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer sk-egress-test"}
PASSWORD = "proxy-password-9d1f"


@pytest.fixture
async def proxy() -> AsyncIterator[EgressProxyServer]:
    server = EgressProxyServer("gw", PASSWORD)
    await server.start()
    yield server
    await server.stop()


def _address(server: EgressProxyServer) -> str:
    assert server.server is not None
    return f"127.0.0.1:{server.server.sockets[0].getsockname()[1]}"


@pytest.mark.skipif(OPENSSL is None, reason="no openssl to make the test certificates with")
async def test_an_https_provider_is_reached_through_a_connect_tunnel(
    proxy: EgressProxyServer, certificates: Certificates, trusting: ssl.SSLContext
) -> None:
    provider = ScriptedProvider(
        [sends(json_answer(b"one")), sends(json_answer(b"two"))],
        server_context(certificates.provider),
    )
    url = await provider.start()
    through = parse_proxy(f"http://gw:{PASSWORD}@{_address(proxy)}")
    pool = ProviderPool(
        "tunnelled", url, HEADERS, connect_timeout=5, read_timeout=5, tls=trusting, proxy=through
    )
    try:
        assert await read_all(pool) == (200, b"one")
        assert await read_all(pool) == (200, b"two")  # the tunnel is kept alive
        assert proxy.tunnels == [url.split("//")[1].split("/")[0]] and proxy.refused == 0
        # TLS ran end to end: the provider saw the request and its key, the proxy only bytes.
        assert provider.requests[0].startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
        assert b"Proxy-Authorization" not in provider.requests[0]
    finally:
        await pool.close()
        await provider.stop()


async def test_an_http_provider_is_sent_absolute_requests_through_the_proxy(
    proxy: EgressProxyServer,
) -> None:
    provider = ScriptedProvider([sends(json_answer(b"{}"))])
    url = await provider.start()
    through = parse_proxy(f"http://gw:{PASSWORD}@{_address(proxy)}")
    pool = ProviderPool("plain", url, HEADERS, connect_timeout=5, read_timeout=5, proxy=through)
    try:
        assert await read_all(pool) == (200, b"{}")
        assert proxy.forwarded == [url + "/chat/completions"]
    finally:
        await pool.close()
        await provider.stop()


async def test_a_proxy_that_refuses_is_a_connect_failure_without_its_password(
    proxy: EgressProxyServer, trusting: ssl.SSLContext
) -> None:
    wrong = parse_proxy(f"http://gw:not-it@{_address(proxy)}")
    pool = ProviderPool(
        "refused",
        "https://127.0.0.1:9/v1",
        HEADERS,
        connect_timeout=5,
        read_timeout=5,
        tls=trusting,
        proxy=wrong,
    )
    try:
        with pytest.raises(UpstreamBroken) as refused:
            await read_all(pool)
        assert refused.value.kind == "connect" and proxy.refused == 1
        assert "not-it" not in str(refused.value) and PASSWORD not in str(refused.value)
    finally:
        await pool.close()


def test_the_environment_names_the_proxy_unless_no_proxy_names_the_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert proxy_for("https://api.openai.com/v1", None) is None
    monkeypatch.setenv("https_proxy", "http://u:p%40ss@egress.internal:3128")
    monkeypatch.setenv("NO_PROXY", "localhost,.corp.example, 10.0.0.7:443")
    found = proxy_for("https://api.openai.com/v1", None)
    assert found is not None and (found.host, found.port, found.secret) == (
        "egress.internal",
        3128,
        "p@ss",
    )
    assert proxy_for("http://api.openai.com/v1", None) is None  # HTTP_PROXY is not set
    assert proxy_for("https://llm.corp.example/v1", None) is None
    assert proxy_for("https://10.0.0.7/v1", None) is None
    assert proxy_for("https://api.openai.com/v1", "direct") is None  # the catalog wins
    catalog = proxy_for("https://api.openai.com/v1", "http://127.0.0.1:8888")
    assert catalog is not None and catalog.port == 8888 and catalog.authorization is None
    assert bypassed("anything.example", "*")
    # A provider on this machine never goes through the environment's proxy.
    for local in ("http://127.0.0.1:8000/v1", "https://localhost/v1", "https://[::1]:8443/v1"):
        monkeypatch.setenv("http_proxy", "http://egress.internal:3128")
        assert proxy_for(local, None) is None
    with pytest.raises(ValueError, match="http://"):
        parse_proxy("socks5://127.0.0.1:1080")


async def test_a_base_url_keeps_its_query() -> None:
    provider = ScriptedProvider([sends(json_answer(b"{}"))])
    url = await provider.start()
    pool = ProviderPool(
        "azure", url + "?api-version=2024-10-21", HEADERS, connect_timeout=5, read_timeout=5
    )
    try:
        assert await read_all(pool) == (200, b"{}")
        assert provider.requests[0].startswith(
            b"POST /v1/chat/completions?api-version=2024-10-21 HTTP/1.1\r\n"
        )
    finally:
        await pool.close()
        await provider.stop()


def test_credentials_in_a_base_url_or_a_bad_proxy_are_configuration_errors(
    tmp_path: Path,
) -> None:
    with pytest.raises(ValueError, match="must not hold credentials"):
        ProviderConfig(name="p", base_url="https://user:secret@api.example/v1")
    bad = tmp_path / "gateway.toml"
    bad.write_text(
        '[[providers]]\nname = "p"\nbase_url = "https://user:secret@api.example/v1"\n'
        '[[providers]]\nname = "q"\nbase_url = "https://api.example/v1"\nproxy = "socks5://x"\n'
    )
    proc = gateway_process(["check-config", str(bad)], {})
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 2
    assert "must not hold credentials" in err and "secret" not in err
    assert "providers.1.proxy" in err


async def test_the_gateway_bills_a_request_sent_through_the_catalogs_proxy(
    proxy: EgressProxyServer, redis_url: str, provider_url: str
) -> None:
    """A provider whose catalog entry names a proxy is called through it, and billed as ever."""
    settings = make_settings(redis_url, provider_url)
    through = f"http://gw:{PASSWORD}@{_address(proxy)}"
    providers = [p.model_copy(update={"proxy": through}) for p in settings.providers]
    app = create_app(settings.model_copy(update={"providers": providers}))
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        _, key = await new_account(client, purchase="1.00")
        resp = await client.post(
            "/api/v1/chat/completions", json=chat("test/paid"), headers=bearer(key)
        )
        assert resp.status == 200 and (await resp.json())["usage"]["cost"] > 0
    assert any(target.endswith("/v1/chat/completions") for target in proxy.forwarded)
