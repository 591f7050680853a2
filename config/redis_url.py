"""Is a Redis URL one the gateway can use? Checked with the other settings, so that a bad one is
one clear line and exit 2 at start (serve and check-config alike), not redis-py's traceback when
the first connection is made. No message quotes the URL: it may carry a password.
"""

from urllib.parse import urlsplit

from redis.connection import parse_url

FORMS = "redis://host:port/db, rediss://host:port/db (TLS) or unix:///path/to/redis.sock"


def redis_url_problem(url: str) -> str | None:
    """Why the gateway cannot use `url`, in one line; None when it can."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return f"not a URL; use {FORMS}"
    scheme = parts.scheme.lower()
    if "cluster" in scheme:
        return (
            f"{scheme}:// names a Redis Cluster, which this build does not support yet; "
            "give one server's redis:// URL"
        )
    if scheme not in ("redis", "rediss", "unix"):
        shown = f"{scheme!r}" if scheme else "none"
        return f"the scheme is {shown}; use {FORMS}"
    if scheme == "unix":
        if not parts.path:
            return "unix:// needs the socket's path: unix:///path/to/redis.sock"
    else:
        if not parts.hostname:
            return f"no host; use {FORMS}"
        try:
            port = parts.port
        except ValueError:
            port = 0
        if port == 0 or (port is None and parts.netloc.endswith(":")):
            return "the port must be a number from 1 to 65535"
        database = parts.path.lstrip("/")
        if database and not (database.isascii() and database.isdigit()):
            return "the database (after the last /) must be a number, such as /0"
    try:
        parse_url(url)  # type: ignore[no-untyped-call]
    except ValueError:
        return f"redis-py cannot use it; use {FORMS}"
    return None
