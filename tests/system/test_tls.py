"""The gateway on Redis over TLS, trusting a private CA given in the URL: one server
(`rediss://...?ssl_ca_certs=`), and a cluster whose nodes speak TLS among themselves too and ask
clients for a certificate (`rediss+cluster://...?ssl_ca_certs=...&ssl_certfile=...&ssl_keyfile=`).
Without the CA, or without the client certificate, /readyz answers 503 (saying why where it can),
and requests get 503 rather than being answered with nothing to bill them against."""

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from bench.cluster import LocalCluster
from bench.tls import TlsFiles, make_tls_files, serves_tls
from gateway.app import create_app
from gateway.redis_clients import store_client
from gateway.runtime.redis_server import RedisServer, ServerBinary, find_binaries, free_port
from tests.support import (
    ThreadedServer,
    account_state,
    admin_headers,
    bearer,
    chat,
    make_settings,
    new_account,
)


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TlsFiles, ServerBinary]]:
    """The CA and certificate, and a server binary built with TLS."""
    root = tmp_path_factory.mktemp("tls")
    try:
        files = make_tls_files(root / "certs")
    except RuntimeError as exc:
        pytest.skip(str(exc))
    for n, binary in enumerate(find_binaries()):
        if serves_tls(binary, files, root / f"probe-{n}"):
            yield files, binary
            return
    pytest.skip("no redis-server built with TLS here (`make test-deps` installs Debian's)")


async def _bills_a_request(url: str, provider: ThreadedServer) -> None:
    """A paid request, streamed and not, is answered and charged through the TLS store."""
    async with TestClient(
        TestServer(create_app(make_settings(url, provider.url)), host="127.0.0.1")
    ) as c:
        assert (await c.get("/readyz")).status == 200
        for _ in range(4):  # on a cluster: accounts on more than one master
            account_id, key = await new_account(c, purchase="1.00")
            before = (await account_state(c, account_id))["balance"]
            for stream in (False, True):
                answer = await c.post(
                    "/api/v1/chat/completions",
                    json=chat("test/paid", stream=stream),
                    headers=bearer(key),
                )
                assert answer.status == 200, await answer.text()
                await answer.read()
            for _ in range(100):  # settlement lands after the answer
                if (await account_state(c, account_id))["balance"] != before:
                    break
                await asyncio.sleep(0.05)
            assert (await account_state(c, account_id))["balance"] != before


async def _refused_without_the_ca(url: str, provider: ThreadedServer) -> None:
    untrusted = url.split("?", 1)[0]
    async with TestClient(
        TestServer(create_app(make_settings(untrusted, provider.url)), host="127.0.0.1")
    ) as c:
        answer = await c.get("/readyz")
        assert answer.status == 503
        assert "TLS certificate is not trusted" in (await answer.json())["error"]["message"]
        made = await c.post("/admin/v1/accounts", json={}, headers=admin_headers())
        assert made.status == 503, await made.text()  # not a 500: the store is away


async def test_one_tls_server_with_a_private_ca(
    tls: tuple[TlsFiles, ServerBinary], tmp_path: Path, provider: ThreadedServer
) -> None:
    files, binary = tls
    tls_port = free_port()
    server = RedisServer(
        tmp_path / "redis",
        binary=binary,
        port=free_port(),
        appendonly=False,
        extra_args=files.server_args(tls_port),
    ).start()
    try:
        url = f"rediss://127.0.0.1:{tls_port}/0?ssl_ca_certs={files.ca.resolve()}"
        await _bills_a_request(url, provider)
        await _refused_without_the_ca(url, provider)
    finally:
        server.stop()


async def test_a_tls_cluster_with_a_private_ca(
    tls: tuple[TlsFiles, ServerBinary], tmp_path: Path, provider: ThreadedServer
) -> None:
    files, binary = tls
    cluster = LocalCluster(tmp_path / "cluster", binary=binary, tls=files).start()
    try:
        assert cluster.url.startswith("rediss+cluster://")
        await _bills_a_request(cluster.url, provider)
        store = store_client(cluster.url)
        try:  # the client was sent on from the seeds to every master, over TLS
            await store.ping()
            ports = {node.port for node in store.get_primaries()}
            assert ports == {cluster.tls_ports[m.port or 0] for m in cluster.masters_now()}
        finally:
            await store.aclose()
        await _refused_without_the_ca(cluster.url, provider)
        anonymous = cluster.url.split("&ssl_certfile", 1)[0]  # trusts it, but shows no certificate
        async with TestClient(
            TestServer(create_app(make_settings(anonymous, provider.url)), host="127.0.0.1")
        ) as c:
            answer = await c.get("/readyz")
            assert answer.status == 503  # named when the TLS alert arrives before the reset
            made = await c.post("/admin/v1/accounts", json={}, headers=admin_headers())
            assert made.status == 503
    finally:
        cluster.stop()
