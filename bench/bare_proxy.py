"""A bare aiohttp pass-through proxy: the floor any aiohttp gateway can reach on this machine.

No auth, no metering, no body parsing: one shared ClientSession (pooled like the gateway's) forwards
POST /api/v1/<api> (chat/completions, embeddings, responses) to the mock provider's /v1/<api> and
relays the answer, streams byte for byte as they arrive. The gap between it and the gateway is
what the gateway's own work costs; the gap between it and the mock is what any aiohttp proxy hop
costs.

Usage: python -m bench.bare_proxy --port PORT --upstream http://127.0.0.1:MOCKPORT
"""

import argparse
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from bench import new_event_loop
from gateway.runtime.serve import tune_garbage_collector

UPSTREAM = web.AppKey("upstream", str)
SESSION = web.AppKey("session", aiohttp.ClientSession)
JSON_HEADERS = {"Content-Type": "application/json"}
PROXIED = ("chat/completions", "embeddings", "responses")


async def proxy(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    session = request.app[SESSION]
    url = request.app[UPSTREAM] + request.path.removeprefix("/api")
    async with session.post(url, data=body, headers=JSON_HEADERS) as upstream:
        content_type = upstream.headers.get("Content-Type", "application/json")
        if not content_type.startswith("text/event-stream"):
            return web.Response(
                body=await upstream.read(),
                status=upstream.status,
                headers={"Content-Type": content_type},
            )
        response = web.StreamResponse(
            status=upstream.status,
            headers={"Content-Type": content_type, "Cache-Control": "no-cache"},
        )
        await response.prepare(request)
        async for piece in upstream.content.iter_any():
            await response.write(piece)
        await response.write_eof()
        return response


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _session(app: web.Application) -> AsyncIterator[None]:
    """The same pool settings as the gateway's upstream had: unlimited connections, 30 s
    keep-alive."""
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=30)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=300)
    app[SESSION] = aiohttp.ClientSession(
        connector=connector, timeout=timeout, skip_auto_headers=("User-Agent",)
    )
    try:
        yield
    finally:
        await app[SESSION].close()


def create_app(upstream: str) -> web.Application:
    app = web.Application(client_max_size=4 * 1024 * 1024)
    app[UPSTREAM] = upstream.rstrip("/")
    app.cleanup_ctx.append(_session)
    for api in PROXIED:
        app.router.add_post(f"/api/v1/{api}", proxy)
    app.router.add_get("/healthz", healthz)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="the mock provider's root URL")
    args = parser.parse_args()
    tune_garbage_collector()  # as the gateway does: the floor gets every trick it can use
    web.run_app(
        create_app(args.upstream),
        host=args.host,
        port=args.port,
        access_log=None,
        print=None,
        backlog=1024,
        shutdown_timeout=2.0,
        loop=new_event_loop(),
    )


if __name__ == "__main__":
    main()
