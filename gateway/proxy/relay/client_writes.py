"""Writes to one streaming client, each bounded by the write timeout, with one timer per stream
instead of one per write.

A write to a client only waits when the client has stopped taking bytes (the socket's buffer is
full: aiohttp then waits for it to drain), so a stream of many small events needs no deadline per
event: a watch that looks, at most once per timeout, whether a write has been waiting since
longer than the timeout is enough. A client found stuck is disconnected, as one that hung up.
"""

import asyncio

from aiohttp import web


class ClientWrites:
    __slots__ = ("_loop", "_request", "_response", "_since", "_stuck", "_timeout", "_watch")

    def __init__(self, request: web.Request, response: web.StreamResponse, timeout: float) -> None:
        self._request = request
        self._response = response
        self._timeout = timeout
        self._loop = asyncio.get_running_loop()
        self._since: float | None = None  # when the write under way began
        self._watch: asyncio.TimerHandle | None = None
        self._stuck = False

    async def send(self, data: bytes) -> None:
        """ConnectionResetError when the client is gone, or took nothing for the timeout."""
        if self._stuck:
            raise ConnectionResetError("the client took no bytes within the write timeout")
        self._since = self._loop.time()
        if self._watch is None:
            self._watch = self._loop.call_at(self._since + self._timeout, self._look)
        try:
            await self._response.write(data)
        finally:
            self._since = None
        if self._stuck:  # disconnected while its write waited
            raise ConnectionResetError("the client took no bytes within the write timeout")

    def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None

    def _look(self) -> None:
        self._watch = None
        since = self._since
        if since is None:
            return  # no write waiting: the next one watches again
        due = since + self._timeout
        if self._loop.time() < due:
            self._watch = self._loop.call_at(due, self._look)
            return
        self._stuck = True
        if self._request.transport is not None:
            self._request.transport.abort()  # wakes the waiting write
