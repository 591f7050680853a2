"""Fixtures of the metering tests."""

import pytest

from bench.cluster import LocalCluster
from gateway.runtime.redis_server import RedisServer


@pytest.fixture(
    params=[("server", 0), ("server", 1), ("cluster", 0), ("cluster", 1)],
    ids=["first-server", "second-server", "first-cluster", "second-cluster"],
)
def any_redis_url(request: pytest.FixtureRequest, redis_servers: list[RedisServer]) -> str:
    """Contract tests run on each server the machine has, and on a cluster of each."""
    kind, index = request.param
    if index >= len(redis_servers):
        pytest.skip("this machine has only one kind of Redis server")
    if kind == "cluster":
        clusters: list[LocalCluster] = request.getfixturevalue("redis_clusters")
        return clusters[index].url
    return redis_servers[index].url
