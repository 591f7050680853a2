"""Health and readiness: `/healthz` says the process answers, `/readyz` that a request could be
served now (Redis answers where requests write, the scripts are loaded, the catalog and the
limits are in place), and why not when it could not."""

import asyncio
import os

from aiohttp import web

from gateway.http.describe import (
    COUNT,
    INTEGER,
    OPEN,
    STRING,
    described,
    errors,
    list_of,
    obj,
    ok,
    op,
)
from gateway.http.errors import ApiError, json_response
from gateway.limits import LIMITS
from gateway.proxy.settle.journal import JOURNAL
from gateway.redis_clients import readiness, unreachable_reason
from gateway.state import MODELS, SERVICES, SETTINGS

HEALTH = obj(["status", "pid"], status={"const": "ok"}, pid=INTEGER)
READY = obj(
    ["status", "models", "limits"],
    status={"const": "ready"},
    models=COUNT,
    limits=list_of(STRING),
    scripts_loaded_now={"type": "integer", "description": "scripts this check had to load"},
    journal_pending=COUNT,
)


@described(op("The process answers", "operations", OPEN, {"200": ok(HEALTH)}))
async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok", "pid": os.getpid()})


@described(
    op(
        "Redis reachable, catalog and rate limits loaded",
        "operations",
        OPEN,
        {"200": ok(READY), **errors(503)},
    )
)
async def readyz(request: web.Request) -> web.Response:
    """Redis answers and has the request path's scripts, the catalog and the limits are loaded."""
    services = request.app[SERVICES]
    bound = request.app[SETTINGS].redis_timeout_seconds  # a probe must not hang on a dead node
    try:
        async with asyncio.timeout(bound):
            await services.redis.ping()
            problem = await readiness(services.clients)
            loaded = await services.metering.ensure_scripts()
    except Exception as exc:
        reason = f"no answer within {bound:g} s" if isinstance(exc, TimeoutError) else None
        raise ApiError(
            503,
            f"redis is not reachable ({reason or unreachable_reason(exc)})",
            "service_unavailable",
        ) from None
    if problem is not None:
        raise ApiError(503, problem, "service_unavailable")
    if not request.app[MODELS]:
        raise ApiError(503, "the catalog has no models", "service_unavailable")
    limits = [c.name for c in request.app[LIMITS].policy.limits]
    return json_response(
        {
            "status": "ready",
            "models": len(request.app[MODELS]),
            "limits": limits,
            "scripts_loaded_now": loaded,
            "journal_pending": request.app[JOURNAL].pending(),
        }
    )
