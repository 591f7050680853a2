"""`GET /openapi.json`: an OpenAPI 3.1 document of every HTTP endpoint the gateway serves.

Built from the app's route table: every route's operation is the one its handler describes beside
itself (gateway.http.describe); the shapes, the error format and the security schemes are in
gateway.api.openapi.schemas (the answers' and bodies' from their typed models).
tests/api/test_openapi.py keeps it true: its paths and methods are exactly the app's routes, it is
valid OpenAPI 3.1, and schemathesis, run against a live gateway, finds every answer the gateway
gives described here. HEAD, which aiohttp answers for every GET, is left implied.
"""

from typing import Any

import orjson
from aiohttp import web

from gateway import __version__
from gateway.api.openapi.schemas import RESPONSES, SCHEMAS, SECURITY_SCHEMES
from gateway.http.describe import OPEN, described, ok, op, operation_of

HEAD: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "metering-gateway",
        "version": __version__,
        "summary": "A usage-metering reverse proxy for OpenAI-style model APIs",
        "description": "Prepaid credits in USD, listed-price metering, usage records. Amounts in "
        "JSON are decimal strings in USD (numbers where the OpenAI/OpenRouter shape has "
        'numbers); times are RFC 3339 UTC. Every error is `{"error": {"code", "message", '
        '"metadata": {"error_type", ...}}}`. Every answer carries `X-Request-Id`.',
    },
    "tags": [
        {"name": "completions", "description": "OpenAI-style model calls (API key)"},
        {"name": "consumer", "description": "The key holder's read APIs (API key)"},
        {"name": "activity", "description": "Usage over time, as JSON, CSV and a page"},
        {"name": "keys", "description": "An account's keys (management key)"},
        {"name": "admin", "description": "The operator's admin API (admin token)"},
        {"name": "webhooks", "description": "Signed payment notifications"},
        {"name": "operations", "description": "Health, readiness, metrics, this document"},
    ],
}
COMPONENTS = {"schemas": SCHEMAS, "responses": RESPONSES, "securitySchemes": SECURITY_SCHEMES}


def build(app: web.Application) -> dict[str, Any]:
    """The document of `app`: a path for every route of its table, each with the operation its
    handler describes. A route nobody described is an error, not a gap in the document."""
    paths: dict[str, dict[str, Any]] = {}
    for route in app.router.routes():
        if route.method == "HEAD" or route.resource is None:
            continue  # aiohttp answers HEAD for every GET by itself: left implied
        where, method = route.resource.canonical, route.method.lower()
        operation = operation_of(route.handler)
        if operation is None:
            raise LookupError(f"{route.method} {where} has no description")
        paths.setdefault(where, {})[method] = operation
    return {**HEAD, "paths": paths, "components": COMPONENTS}


class Document:
    """The app's document, made once (the route table does not change once the app runs)."""

    def __init__(self) -> None:
        self.body: bytes | None = None


DOCUMENT = web.AppKey("openapi_document", Document)


@described(
    op(
        "This document",
        "operations",
        OPEN,
        {"200": ok({"type": "object", "required": ["openapi", "paths"]})},
    )
)
async def openapi_endpoint(request: web.Request) -> web.Response:
    document = request.app[DOCUMENT]
    if document.body is None:
        document.body = orjson.dumps(build(request.app))
    return web.Response(body=document.body, content_type="application/json")
