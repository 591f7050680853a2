"""The chat and completions API adapter: `POST /api/v1/chat/completions` and
`/api/v1/completions` (also under `/v1`), served by the pipeline (gateway.proxy.pipeline)."""

from aiohttp import web

from gateway.proxy.pipeline import serve_completion

routes = web.RouteTableDef()


@routes.post("/api/v1/chat/completions")
@routes.post("/v1/chat/completions")
async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await serve_completion(request, "chat")


@routes.post("/api/v1/completions")
@routes.post("/v1/completions")
async def completions(request: web.Request) -> web.StreamResponse:
    return await serve_completion(request, "completions")
