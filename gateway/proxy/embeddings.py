"""The embeddings API adapter: `POST /api/v1/embeddings` (also under `/v1`), served by the
pipeline (gateway.proxy.pipeline) as chat is: the same admission, settlement, limits and record.

An embedding reads input and writes no output: the reservation is the input's worst case at the
model's prompt price, the charge `usage.prompt_tokens` at that price, and zero completion
insurance does not apply (there is no completion to miss). The answer is the provider's, with
`usage.cost` added; `encoding_format: "base64"` passes through untouched.
"""

from aiohttp import web

from gateway.http.describe import API_KEY, STRING, described, errors, json_body, op, ref
from gateway.proxy.pipeline import serve_completion

routes = web.RouteTableDef()
ANSWERED = {
    "description": "The provider's embeddings, with `usage.cost`",
    "headers": {
        "X-Generation-Id": {"description": "the generation id", "required": True, "schema": STRING}
    },
    "content": {"application/json": {"schema": ref("Embeddings")}},
}


@routes.post("/api/v1/embeddings")
@routes.post("/v1/embeddings")
@described(
    op(
        "Embeddings",
        "completions",
        API_KEY,
        {
            "200": ANSWERED,
            **errors(400, 401, 402, 403, 404, 408, 413, 429, 502, 503),
            "4XX": {
                "description": "The provider's own refusal of the request, passed on",
                "content": {"application/json": {"schema": ref("Error")}},
            },
        },
        body=json_body(ref("EmbeddingRequest")),
    )
)
async def embeddings(request: web.Request) -> web.StreamResponse:
    return await serve_completion(request, "embeddings")
