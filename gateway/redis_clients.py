"""The gateway's Redis clients, for one server or for a Redis Cluster.

`GATEWAY_REDIS_URL` names one server (`redis://`, `rediss://`, `unix://`) or a cluster
(`redis+cluster://host:port,host:port`). A plain URL that turns out to name a node of a cluster
is used as a cluster too (its other nodes are found from it): it could only answer MOVED for most
accounts otherwise. The request path's scripts go through a batcher (metering/batching.py), one
per master on a cluster (metering/cluster_batching.py); everything else goes through redis-py's
client, `Redis` or `RedisCluster`.
"""

import logging
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError, RedisError

from config.redis_url import ClusterTarget, cluster_target
from metering.transport.batching import ScriptBatcher
from metering.transport.client import AnyRedis, Batcher
from metering.transport.cluster_batching import ClusterScriptBatcher
from metering.transport.settle_merge import merge_settlements

log = logging.getLogger("gateway")


@dataclass
class RedisClients:
    redis: AnyRedis  # off the request path
    hot: AnyRedis  # the request path's own (no socket timeout: bounded per round trip)
    batcher: Batcher
    cluster: bool

    async def aclose(self) -> None:
        await self.batcher.aclose()
        if self.hot is not self.redis:
            await self.hot.aclose()
        await self.redis.aclose()


async def open_clients(
    url: str, *, timeout: float, alone: Any = None, replica_wait_ms: int = 100
) -> RedisClients:
    """Clients for `url`; `timeout` bounds each round trip off the request path, and each of
    the request path's batches; on a cluster, settlements wait up to `replica_wait_ms` for a
    replica to confirm them (0: not at all)."""
    target = cluster_target(url)
    if target is not None:
        cluster = _cluster(target, timeout)
    elif await _names_a_cluster_node(url, timeout):
        log.info("GATEWAY_REDIS_URL names a node of a Redis Cluster: running in cluster mode")
        cluster = RedisCluster.from_url(url, **_cluster_options(timeout))
    else:
        return _single_server(url, timeout, alone)
    batcher = ClusterScriptBatcher(
        cluster,
        timeout=timeout,
        alone=alone,
        replica_wait_ms=replica_wait_ms,
        merge=merge_settlements,
    )
    return RedisClients(cluster, cluster, batcher, cluster=True)


def store_client(url: str, timeout: float = 5.0, *, decode: bool = True) -> AnyRedis:
    """One client for `url`, a cluster's or a server's (for tools and tests)."""
    target = cluster_target(url)
    if target is None:
        return Redis.from_url(url, decode_responses=decode, socket_timeout=timeout)
    return _cluster(target, timeout, decode=decode)


def _cluster(target: ClusterTarget, timeout: float, *, decode: bool = True) -> RedisCluster:
    options = {**_cluster_options(timeout), "decode_responses": decode}
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in target.seeds],
        username=target.username,
        password=target.password,
        ssl=target.tls,
        **target.tls_options,
        **options,
    )


def _single_server(url: str, timeout: float, alone: Any) -> RedisClients:
    # A pooled connection that died with a restarted Redis is retried once on a new one; every
    # script is safe to run twice (settlement and admission are idempotent on the generation id).
    redis = Redis.from_url(
        url,
        decode_responses=True,
        retry=Retry(NoBackoff(), 1),
        retry_on_error=[ConnectionError],
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        max_connections=1024,
    )
    hot = Redis.from_url(
        url,
        decode_responses=True,
        retry=Retry(NoBackoff(), 1),
        retry_on_error=[ConnectionError],
        socket_connect_timeout=timeout,
        max_connections=1024,
    )
    batcher = ScriptBatcher(
        hot.connection_pool.make_connection, timeout=timeout, alone=alone, merge=merge_settlements
    )
    return RedisClients(redis, hot, batcher, cluster=False)


def _cluster_options(timeout: float) -> dict[str, Any]:
    return {
        "decode_responses": True,
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "max_connections": 1024,
    }


async def _names_a_cluster_node(url: str, timeout: float) -> bool:
    """The server answers and says it runs in cluster mode (False when it cannot be asked: the
    readiness check asks again, see `readiness`)."""
    probe = Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        info = await probe.info("cluster")
        return bool(info.get("cluster_enabled"))
    except (RedisError, OSError):
        return False
    finally:
        await probe.aclose()


async def readiness(clients: RedisClients) -> str | None:
    """Why a request could not write where it will write now; None when it can. One server:
    it answers (and is not a cluster node the gateway took for a single server). A cluster:
    every master answers, says the cluster is ok, and every slot is served."""
    if not clients.cluster:
        assert isinstance(clients.redis, Redis)
        info = await clients.redis.info("cluster")
        if info.get("cluster_enabled"):
            return (
                "GATEWAY_REDIS_URL names a node of a Redis Cluster that was not reachable when "
                "the gateway started: restart it, or write the URL as redis+cluster://"
            )
        return None
    assert isinstance(clients.redis, RedisCluster)
    cluster = clients.redis
    if not cluster.get_primaries():
        await cluster.initialize()
    served = 0
    for node in cluster.get_primaries():
        info = await cluster.cluster_info(target_nodes=node)
        if info.get("cluster_state") != "ok":
            return f"cluster node {node.name} says cluster_state:{info.get('cluster_state')}"
        served = max(served, int(info.get("cluster_slots_ok", 0)))
    if served < 16384:
        return f"the cluster serves {served} of 16384 slots"
    return None


def unreachable_reason(exc: BaseException) -> str:
    """Why the store did not answer, in words an operator can act on (TLS trust is the usual
    first-day mistake, and redis-py names it only deep in its message). No address or secret."""
    text = " ".join(str(e) for e in _chain(exc))
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return "its TLS certificate is not trusted: give the CA with ?ssl_ca_certs=/path/ca.pem"
    if "CERTIFICATE_REQUIRED" in text:
        return "it asks for a client certificate: give ssl_certfile and ssl_keyfile in the URL"
    if "WRONG_VERSION_NUMBER" in text or "record layer failure" in text:
        return "the TLS handshake failed: is that port serving TLS?"
    return type(exc).__name__


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen and len(seen) < 10:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen
