"""Read a server-sent event stream the way a client does."""

from typing import Any

import orjson
from aiohttp import ClientResponse


async def read_events(resp: ClientResponse) -> list[Any]:
    """Every `data:` payload in order: parsed JSON, or the string "[DONE]"."""
    raw = await resp.read()
    events: list[Any] = []
    for block in raw.decode().split("\n\n"):
        block = block.strip()
        if not block.startswith("data:"):
            continue
        data = block[5:].strip()
        events.append(data if data == "[DONE]" else orjson.loads(data))
    return events
