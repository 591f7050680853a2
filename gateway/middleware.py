"""The one middleware every request of the main app passes through.

It composes four concerns that live in their own modules: the request id, metrics and access line
(gateway.observability.metrics), the admin token (gateway.api.admin), reads that wait for
settlements still out (gateway.proxy.settle.settling), and errors as JSON (gateway.http.errors). One
layer rather than four: every layer is a coroutine frame that each resumption of a handler passes
through again.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from gateway.api.admin import guard_admin
from gateway.http.errors import error_response
from gateway.observability.metrics import REQUEST_ID, observe_request, request_id_of
from gateway.proxy.settle.settling import settle_before_reading

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def gateway_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    request_id = request_id_of(request)
    request[REQUEST_ID] = request_id
    status = 500
    try:
        try:
            guard_admin(request)
            await settle_before_reading(request)
            response = await handler(request)
        except Exception as exc:  # CancelledError is not one: a client gone is not answered
            response = error_response(request, exc)
        status = response.status
        if not response.prepared:
            response.headers["X-Request-Id"] = request_id
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    except asyncio.CancelledError:
        status = 499  # the client went away: its doing, not a 5xx of ours (nginx's number)
        raise
    finally:
        # After the answer: aiohttp writes it once this returns, in this turn of the loop.
        asyncio.get_running_loop().call_soon(
            observe_request, request, request_id, status, time.perf_counter() - started
        )
