"""The fast mock provider for the benchmark: the project's simulated provider, in its own process,
on uvloop, with no access log, so it costs as little CPU as it can and never is the bottleneck
it would be if it shared the gateway's event loop.

Usage: python -m bench.mock_provider --port PORT
"""

import argparse

from aiohttp import web

from bench import new_event_loop
from gateway.runtime.simulated_provider import create_simulated_provider


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    web.run_app(
        create_simulated_provider(),
        host=args.host,
        port=args.port,
        access_log=None,
        print=None,
        backlog=1024,
        shutdown_timeout=2.0,
        loop=new_event_loop(),
    )


if __name__ == "__main__":
    main()
