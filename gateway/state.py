"""Typed application state: what handlers reach through `request.app[...]`.

Every module may import this one, so it imports none of theirs at run time: the services' types
are for the type checker only.
"""

from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from config.settings import Settings
from gateway.clock import Clock
from gateway.models import ResolvedModel

if TYPE_CHECKING:
    from gateway.http.auth import KeyCache
    from gateway.proxy.forward.upstream import Upstream
    from gateway.redis_clients import RedisClients
    from metering.accounts import AccountStore
    from metering.admission import Metering
    from metering.generations import Generations
    from metering.ledger import Ledger
    from metering.payments.checkouts import Checkouts
    from metering.payments.outbox import Outbox
    from metering.rollup_fold import RollupFold
    from metering.rollups import Rollups
    from metering.transport.client import AnyRedis
    from ratelimit.store import RateLimitStore


@dataclass
class Services:
    redis: "AnyRedis"
    clients: "RedisClients"
    accounts: "AccountStore"
    metering: "Metering"
    upstream: "Upstream"
    keys: "KeyCache"
    limits: "RateLimitStore"
    ledger: "Ledger"
    outbox: "Outbox"
    rollups: "Rollups"
    generations: "Generations"
    rollup_fold: "RollupFold"
    checkouts: "Checkouts"


class Serving:
    """Completion requests this process is serving now. When there is one, the request path's
    Redis calls are written at once rather than batched at the end of the loop turn: no other
    request's call could join them."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0

    def alone(self) -> bool:
        return self.count <= 1


SETTINGS = web.AppKey("settings", Settings)
CLOCK = web.AppKey("clock", Clock)
MODELS = web.AppKey("models", dict[str, ResolvedModel])
SERVICES = web.AppKey("services", Services)
SERVING = web.AppKey("serving", Serving)
