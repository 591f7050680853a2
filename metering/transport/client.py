"""The Redis clients metering works with: one server (`Redis`) or a cluster (`RedisCluster`).

Every script's keys share one slot (see layout.py), so each call routes to one node either way.
"""

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import RedisClusterException, RedisError

from metering.transport.batching import ScriptBatcher
from metering.transport.cluster_batching import ClusterScriptBatcher

AnyRedis = Redis | RedisCluster
Batcher = ScriptBatcher | ClusterScriptBatcher

# What a store that cannot be reached raises. redis-py's cluster client raises some of it outside
# RedisError (no node reachable, a slot with no master: RedisClusterException), so a handler or a
# background pass that caught RedisError alone answered 500 or stopped for good on a cluster.
STORE_ERRORS: tuple[type[Exception], ...] = (RedisError, RedisClusterException)
