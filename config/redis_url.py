"""Is a Redis URL one the gateway can use, and what does it name? Checked with the other settings,
so that a bad one is one clear line and exit 2 at start (serve and check-config alike), not
redis-py's traceback when the first connection is made. No message quotes the URL: it may carry a
password.

A Redis Cluster is named `redis+cluster://[user:password@]host:port[,host:port...]` (or
`rediss+cluster://` for TLS): any of its nodes will do to find the others, several are safer.
A TLS cluster's URL may say how to trust it, as redis-py's `rediss://` URLs do:
`?ssl_ca_certs=/path/ca.pem` (a private CA), `ssl_certfile` and `ssl_keyfile` (a client
certificate), `ssl_cert_reqs=required|optional|none`, `ssl_check_hostname=true|false`.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

FORMS = (
    "redis://host:port/db, rediss://host:port/db (TLS), unix:///path/to/redis.sock or, for a "
    "cluster, redis+cluster://host:port,host:port"
)
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
TLS_FILES = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
CERT_REQS = ("required", "optional", "none")
BOOLEANS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
TLS_OPTIONS = (*TLS_FILES, "ssl_cert_reqs", "ssl_check_hostname")


@dataclass(frozen=True, slots=True)
class ClusterTarget:
    """A cluster URL taken apart: the nodes to start from, and how to speak to them."""

    seeds: tuple[tuple[str, int], ...]
    tls: bool
    username: str | None
    password: str | None
    tls_options: dict[str, Any] = field(default_factory=dict)  # RedisCluster's ssl_*


def _query(url: str) -> list[tuple[str, str]]:
    return parse_qsl(url.partition("?")[2], keep_blank_values=True)


def _tls_options(url: str) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for name, value in _query(url):
        options[name] = BOOLEANS[value.lower()] if name == "ssl_check_hostname" else value
    return options


def cluster_target(url: str) -> ClusterTarget | None:
    """The cluster a `redis+cluster://` URL names; None for any other URL. The URL must have
    passed redis_url_problem."""
    scheme, _, rest = url.partition("://")
    if scheme.lower() not in CLUSTER_SCHEMES:
        return None
    userinfo, _, hosts = rest.partition("?")[0].rpartition("@")
    username, _, password = userinfo.partition(":")
    hosts = hosts.split("/", 1)[0]
    seeds = []
    for item in hosts.split(","):
        host, _, port = item.strip().rpartition(":")
        seeds.append((host.strip("[]"), int(port)))
    return ClusterTarget(
        tuple(seeds),
        scheme.lower().startswith("rediss"),
        unquote(username) or None,
        unquote(password) or None,
        _tls_options(url),
    )


def _option_problem(url: str) -> str | None:
    """Only the TLS options, each said once, with a value that can work (a file that is
    there): a misspelt option would otherwise be dropped, and the first connection fail."""
    seen: set[str] = set()
    for name, value in _query(url):
        if name not in TLS_OPTIONS:
            return (
                f"a cluster URL takes only the TLS options {', '.join(TLS_OPTIONS)}; not {name!r}"
            )
        if not url.lower().startswith("rediss+cluster://"):
            return f"{name} is a TLS option: use rediss+cluster://"
        if name in seen:
            return f"{name} is given twice"
        seen.add(name)
        if name in TLS_FILES and not Path(value).is_file():
            return f"{name}: no such file"
        if name == "ssl_cert_reqs" and value not in CERT_REQS:
            return f"ssl_cert_reqs must be one of {', '.join(CERT_REQS)}"
        if name == "ssl_check_hostname" and value.lower() not in BOOLEANS:
            return "ssl_check_hostname must be true or false"
    return None


def _cluster_problem(url: str) -> str | None:
    rest = url.partition("://")[2].partition("?")[0]
    hosts, _, database = rest.rpartition("@")[2].partition("/")
    if database not in ("", "0"):
        return "a cluster has only database 0"
    if not hosts:
        return "no node; use redis+cluster://host:port,host:port"
    for item in hosts.split(","):
        host, colon, port = item.strip().rpartition(":")
        if not colon or not host.strip("[]"):
            return "each cluster node must be host:port"
        if not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
            return "a node's port must be a number from 1 to 65535"
    return _option_problem(url)


def redis_url_problem(url: str) -> str | None:
    """Why the gateway cannot use `url`, in one line; None when it can."""
    if url.partition("://")[0].lower() in CLUSTER_SCHEMES:
        return _cluster_problem(url)
    try:
        parts = urlsplit(url)
    except ValueError:
        return f"not a URL; use {FORMS}"
    scheme = parts.scheme.lower()
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
    return None
