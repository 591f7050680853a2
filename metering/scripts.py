"""The Lua scripts beside this file, registered once per client (EVALSHA; reloaded on NOSCRIPT)."""

from importlib import resources

from redis.asyncio import Redis
from redis.commands.core import AsyncScript


def _source(name: str) -> str:
    return resources.files("metering").joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")


class Scripts:
    def __init__(self, redis: "Redis") -> None:
        self.admit: AsyncScript = redis.register_script(_source("admit"))
        self.settle: AsyncScript = redis.register_script(_source("settle"))
        self.purchase: AsyncScript = redis.register_script(_source("purchase"))
        self.create_account: AsyncScript = redis.register_script(_source("create_account"))
