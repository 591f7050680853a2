"""What the hostile-input tests share (their fixtures `hc` and `redis` are in conftest.py): a
snapshot of everything an account has in Redis, to show that a refused request wrote nothing."""

from typing import Any

import aiohttp
from redis.asyncio import Redis

from tests.support import ThreadedServer

WEBHOOK_SECRET = "whsec-hostile-8e2d"
CHAT = {"model": "test/paid", "messages": [{"role": "user", "content": "Hello"}]}


async def state_of(redis: Redis, provider: ThreadedServer, account_id: str) -> dict[str, Any]:
    """Every Redis key of the account, dumped; the account list; the provider's request count."""
    dumped = {}
    async for name in redis.scan_iter(match=f"gw:{{a:{account_id}}}:*", count=1000):
        dumped[name] = await redis.dump(name)
    async with aiohttp.ClientSession() as session:
        stats = await (await session.get(provider.url + "/_sim/stats")).json()
    return {
        "keys": dumped,
        "accounts": await redis.zcard("gw:accounts"),
        "provider_requests": stats["requests"],
    }
