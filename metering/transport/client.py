"""The Redis clients metering works with: one server (`Redis`) or a cluster (`RedisCluster`).

Every script's keys share one slot (see layout.py), so each call routes to one node either way.
"""

from redis.asyncio import Redis, RedisCluster

from metering.transport.batching import ScriptBatcher
from metering.transport.cluster_batching import ClusterScriptBatcher

AnyRedis = Redis | RedisCluster
Batcher = ScriptBatcher | ClusterScriptBatcher
