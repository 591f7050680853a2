"""`GET /openapi.json`: an OpenAPI 3.1 document of every HTTP endpoint the gateway serves.

Written by hand as plain dicts: the paths in gateway.api.openapi.paths and .admin_paths;
the shapes, the error format and the security schemes in gateway.api.openapi.schemas.
tests/api/test_openapi.py keeps it true: its paths and methods are exactly the app's routes, it is
valid OpenAPI 3.1, and schemathesis, run against a live gateway, finds every answer the gateway
gives described here. HEAD, which aiohttp answers for every GET, is left implied.
"""

from typing import Any

import orjson
from aiohttp import web

from gateway import __version__
from gateway.api.openapi.admin_paths import ADMIN_PATHS
from gateway.api.openapi.paths import CONSUMER_PATHS, KEYS_PATHS, OPERATOR_PATHS
from gateway.api.openapi.schemas import RESPONSES, SCHEMAS, SECURITY_SCHEMES

DOCUMENT: dict[str, Any] = {
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
    "paths": {**CONSUMER_PATHS, **KEYS_PATHS, **ADMIN_PATHS, **OPERATOR_PATHS},
    "components": {
        "schemas": SCHEMAS,
        "responses": RESPONSES,
        "securitySchemes": SECURITY_SCHEMES,
    },
}
_BODY = orjson.dumps(DOCUMENT)


async def openapi_endpoint(request: web.Request) -> web.Response:
    return web.Response(body=_BODY, content_type="application/json")
