"""The benchmark behind `make bench`: mock provider, bare aiohttp proxy and gateway, side by side.

Run it with `python -m bench.run`; see bench/run.py.
"""

import asyncio


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A uvloop loop where uvloop is installed (as the gateway uses), else asyncio's own."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
