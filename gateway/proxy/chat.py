"""The chat and completions API adapter: `POST /api/v1/chat/completions` and
`/api/v1/completions` (also under `/v1`), served by the pipeline (gateway.proxy.pipeline)."""

from aiohttp import web

from gateway.http.describe import API_KEY, STRING, described, errors, json_body, obj, op, ref
from gateway.proxy.pipeline import serve_completion

routes = web.RouteTableDef()
SSE_EVENT = obj(
    ["data"],
    data={
        "type": "string",
        "description": "a JSON completion chunk (the last before `[DONE]` carries `usage`; an "
        'error after the stream started is a chunk with `finish_reason: "error"` and an '
        "`error` member), then `[DONE]`",
    },
    event=STRING,
    id=STRING,
)
ANSWERED = {
    "description": "The answer, with `usage.cost`; a stream (`stream: true`) is SSE whose last "
    "chunk before `data: [DONE]` carries the usage",
    "headers": {
        "X-Generation-Id": {"description": "the generation id", "required": True, "schema": STRING}
    },
    "content": {
        "application/json": {"schema": ref("Completion")},
        "text/event-stream": {"schema": SSE_EVENT},
    },
}
REFUSED = {
    **errors(400, 401, 402, 403, 404, 408, 413, 429, 502, 503),
    "4XX": {
        "description": "The provider's own refusal of the request (such as a context that is too "
        "long), passed on with its status",
        "content": {"application/json": {"schema": ref("Error")}},
    },
}


def _completion(summary: str, request_schema: str) -> dict[str, object]:
    return op(
        summary,
        "completions",
        API_KEY,
        {"200": ANSWERED, **REFUSED},
        body=json_body(ref(request_schema)),
    )


@routes.post("/api/v1/chat/completions")
@routes.post("/v1/chat/completions")
@described(_completion("Chat completions", "ChatCompletionRequest"))
async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await serve_completion(request, "chat")


@routes.post("/api/v1/completions")
@routes.post("/v1/completions")
@described(_completion("Text completions", "CompletionRequest"))
async def completions(request: web.Request) -> web.StreamResponse:
    return await serve_completion(request, "completions")
