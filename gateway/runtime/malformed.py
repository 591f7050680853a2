"""Requests the server cannot parse as HTTP get the gateway's JSON error shape, quoting nothing.

aiohttp answers a request whose head it cannot parse (a header line without a colon, one over the
line limit, a bad request line) before any handler or middleware runs, with a plain-text 400 whose
message quotes the offending bytes: an `Authorization: Bearer sk-...` line that fails to parse
would be echoed back to whoever sent it, and to anything that logs answers on the way. Its
request handler is replaced by one whose error answer names the kind of problem only.
"""

from typing import Any

import orjson
from aiohttp import web
from aiohttp.http_exceptions import LineTooLong
from aiohttp.web_protocol import RequestHandler

from gateway.http.errors import error_body
from gateway.observability.logs import describe


def _answer(status: int, exc: BaseException | None) -> tuple[int, str, str]:
    """(status, message, error_type) for a request aiohttp refused before any handler ran."""
    if status >= 500:
        return 500, "internal error", "internal_error"
    if isinstance(exc, LineTooLong):
        return 431, "a request header line (or the request line) is too long", "bad_request"
    return status, f"the request is not valid HTTP ({describe(exc)})", "bad_request"


class JsonErrorHandler(RequestHandler):
    __slots__ = ()

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """aiohttp's own, but the answer is JSON and its message quotes nothing (the log line
        is made quiet by gateway.observability.logs.MalformedRequestFilter)."""
        self.log_exception("Error handling request from %s", request.remote, exc_info=exc)
        if request.writer.output_size > 0:
            raise ConnectionError("an answer was already under way; the connection is dropped")
        status, text, error_type = _answer(status, exc)
        response = web.Response(
            status=status,
            body=orjson.dumps(error_body(status, text, error_type)),
            content_type="application/json",
        )
        response.force_close()
        return response


class JsonErrorServer(web.Server):
    def __call__(self) -> RequestHandler:
        return JsonErrorHandler(self, loop=self._loop, **self._kwargs)


class GatewayRunner(web.AppRunner):
    """An AppRunner whose connections answer unparsable requests in the JSON error shape."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = JsonErrorServer  # the same server; only its handler class differs
        return server
