"""The Lua scripts beside this file, registered once per client (EVALSHA; reloaded on NOSCRIPT)."""

from importlib import resources

from redis.commands.core import AsyncScript

from metering.transport.client import AnyRedis


def lua_source(name: str) -> str:
    return resources.files("metering").joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")


def settle_source() -> str:
    """The settlement script as registered (its SHA names its calls: see settle_merge)."""
    return lua_source("fold_cursor") + lua_source("settle")


class Scripts:
    """`admission_prelude` defines the limit hooks of the admission, lease, settlement and
    release scripts (see lua/admit.lua, lua/lease.lua, lua/settle.lua, lua/release.lua); the
    gateway passes the rate limiter's, and without one there are no limits."""

    def __init__(self, redis: AnyRedis, admission_prelude: str | None = None) -> None:
        prelude = admission_prelude if admission_prelude is not None else lua_source("no_limits")
        self.admit: AsyncScript = redis.register_script(
            prelude + lua_source("release_stale") + lua_source("admit")
        )
        self.settle: AsyncScript = redis.register_script(prelude + settle_source())
        self.lease: AsyncScript = redis.register_script(
            prelude + lua_source("release_stale") + lua_source("lease")
        )
        self.generation: AsyncScript = redis.register_script(lua_source("generation"))
        self.fold_read: AsyncScript = redis.register_script(
            lua_source("fold_cursor") + lua_source("fold_read")
        )
        self.fold_apply: AsyncScript = redis.register_script(lua_source("fold_apply"))
        self.purchase: AsyncScript = redis.register_script(lua_source("purchase"))
        money_preludes = lua_source("release_stale") + lua_source("unused")
        self.all: tuple[AsyncScript, ...] = ()
        self.refund: AsyncScript = redis.register_script(money_preludes + lua_source("refund"))
        self.expire: AsyncScript = redis.register_script(money_preludes + lua_source("expire"))
        self.purchase_book: AsyncScript = redis.register_script(
            lua_source("unused") + lua_source("purchase_book")
        )
        self.create_account: AsyncScript = redis.register_script(lua_source("create_account"))
        self.release: AsyncScript = redis.register_script(
            prelude + lua_source("release_stale") + lua_source("release")
        )
        self.all = (
            self.admit,
            self.settle,
            self.lease,
            self.generation,
            self.purchase,
            self.create_account,
            self.refund,
            self.expire,
            self.purchase_book,
            self.release,
            self.fold_read,
            self.fold_apply,
        )

    async def load(self) -> int:
        """Make sure the server has every script (a restarted Redis forgets them); how many
        had to be loaded."""
        redis = self.admit.registered_client
        present = await redis.script_exists(*(s.sha for s in self.all))
        missing = [s for s, here in zip(self.all, present, strict=True) if not here]
        for script in missing:
            await redis.script_load(script.script)
        return len(missing)
