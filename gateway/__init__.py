"""The aiohttp gateway: routes, auth, admission, forwarding and streaming, admin API, metrics,
the command line and the embedded Redis launcher. Composes `metering` and `ratelimit`."""

__version__ = "0.1.0"
