"""Reading JSON request bodies: the whole body within its bounds, and a JSON object or a 400.
The fields are read by the typed models of gateway.api.bodies."""

import asyncio
from typing import Any

import orjson
from aiohttp import web

from gateway.http.errors import ApiError, bad_request
from gateway.state import SETTINGS

MAX_ADMIN_BODY = 64 * 1024


async def json_object(request: web.Request) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > MAX_ADMIN_BODY:
        raise ApiError(413, f"request body is larger than {MAX_ADMIN_BODY} bytes")
    raw = await read_body(request)
    return parse_object(raw) if raw else {}


async def read_body(request: web.Request) -> bytes:
    """The whole body. One that cannot be decoded (broken gzip or chunked framing) is a 400, one
    over the cap a 413, one still arriving after `client_read_timeout` a 408, and a client that
    hung up before sending all of it a 499: the client's doing each time, never a 500 in the
    metrics and the error log."""
    try:
        if request.content.is_eof():  # the usual case: it came with the head, nothing to wait for
            return await request.read()
        limit = request.app[SETTINGS].client_read_timeout
        try:
            async with asyncio.timeout(limit):
                return await request.read()
        except TimeoutError:
            raise ApiError(
                408, f"the request body did not arrive within {limit:g} s", "timeout"
            ) from None
    except web.RequestPayloadError:
        raise bad_request(
            "the request body cannot be read: its Content-Encoding or chunked framing is broken"
        ) from None
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[SETTINGS].max_body_bytes
        raise ApiError(413, f"request body is larger than {limit} bytes", max_bytes=limit) from None
    except ConnectionResetError:
        raise ApiError(
            499, "the client closed the connection before its body arrived", "client_closed"
        ) from None


def parse_object(raw: bytes) -> dict[str, Any]:
    """A JSON object, or a 400 that says what is wrong with the body."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"request body is not valid JSON: {exc.msg}") from None
    if not isinstance(body, dict):
        raise bad_request("request body must be a JSON object")
    return body
