"""Reaching providers through an egress proxy, as deployments whose only way out is a proxy need.

Which proxy: the provider's catalog `proxy` (a URL, or "direct" for none), else the environment
as every HTTP client reads it: `HTTPS_PROXY` for an https provider, `HTTP_PROXY` for an http one
(either case), unless `NO_PROXY` names the provider's host (a name, a domain suffix, an address,
`*`) or the provider is on loopback. Credentials in the proxy's URL become
`Proxy-Authorization: Basic`. An https provider is reached through an HTTP CONNECT tunnel, TLS
running end to end inside it; an http provider is sent its requests in absolute form through the
proxy. Only http:// proxies (TLS to the proxy
itself is not supported).
"""

import asyncio
import base64
import ipaddress
import os
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from config.catalog import ProviderConfig

MAX_PROXY_HEAD = 16 * 1024
DIRECT = "direct"


@dataclass(frozen=True, slots=True)
class EgressProxy:
    host: str
    port: int
    authorization: str | None  # the Proxy-Authorization value, when the URL has credentials
    secret: str | None = None  # the password in it (taken out of what providers send back)


def parse_proxy(url: str) -> EgressProxy:
    """An http:// proxy URL (`http://user:pass@host:port`); ValueError saying what is wrong."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme != "http":
        raise ValueError("a proxy must be an http:// URL (TLS to the proxy is not supported)")
    if not parts.hostname:
        raise ValueError("a proxy URL needs a host")
    try:
        port = parts.port or 80
    except ValueError:
        raise ValueError("a proxy URL's port must be a number") from None
    authorization = secret = None
    if parts.username is not None:
        secret = unquote(parts.password or "") or None
        pair = f"{unquote(parts.username)}:{secret or ''}"
        authorization = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
    return EgressProxy(parts.hostname, port, authorization, secret)


def proxy_for(base_url: str, configured: str | None) -> EgressProxy | None:
    """The proxy a provider at `base_url` is reached through (see above), or None."""
    if configured is not None:
        return None if configured == DIRECT else parse_proxy(configured)
    parts = urlsplit(base_url)
    scheme = parts.scheme
    found = {k.lower(): v for k, v in os.environ.items() if k.lower().endswith("_proxy") and v}
    url = found.get(f"{scheme}_proxy")
    if not url or not parts.hostname or _loopback(parts.hostname):
        return None
    if bypassed(parts.hostname, found.get("no_proxy", "")):
        return None
    return parse_proxy(url)


def _loopback(host: str) -> bool:
    """A provider on this machine (a local vLLM) is never sent through the environment's proxy,
    as Go's HTTP client has it; a catalog `proxy` still applies."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bypassed(host: str, no_proxy: str) -> bool:
    """Whether NO_PROXY names `host`: `*`, the host itself, or a domain it is in (`.example.com`
    or `example.com`); a port after an entry is ignored, as curl does."""
    host = host.lower().rstrip(".")
    for entry in no_proxy.split(","):
        name = entry.strip().lower()
        if name.startswith("[") and "]" in name:
            name = name[1 : name.index("]")]
        elif name.count(":") == 1:
            name = name.split(":")[0]
        name = name.lstrip(".").rstrip(".")
        if name == "*" or (name and (host == name or host.endswith("." + name))):
            return True
    return False


class _TunnelHead(asyncio.Protocol):
    """Reads the proxy's answer to CONNECT; nothing else may come before the TLS handshake."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.answer.done():
            return
        self._buffer += data
        end = self._buffer.find(b"\r\n\r\n")
        if end >= 0:
            if len(self._buffer) > end + 4:
                self.answer.set_exception(OSError("the proxy sent bytes after its CONNECT answer"))
            else:
                self.answer.set_result(self._buffer[:end])
        elif len(self._buffer) > MAX_PROXY_HEAD:
            self.answer.set_exception(OSError("the proxy's CONNECT answer is too large"))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.answer.done():
            self.answer.set_exception(OSError("the proxy closed the connection"))


def connect_request(proxy: EgressProxy, host: str, port: int) -> bytes:
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    lines = [f"CONNECT {target} HTTP/1.1", f"Host: {target}"]
    if proxy.authorization:
        lines.append(f"Proxy-Authorization: {proxy.authorization}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def tunnel_status(head: bytes) -> int:
    """The status of the proxy's answer to CONNECT (OSError when it is not HTTP)."""
    line = head.split(b"\r\n", 1)[0].split(b" ")
    if len(line) < 2 or not line[0].startswith(b"HTTP/1.") or not line[1].isdigit():
        raise OSError("the proxy's answer to CONNECT is not HTTP")
    return int(line[1])


def tunnel_head() -> _TunnelHead:
    return _TunnelHead()


def egress_problems(providers: Iterable[ProviderConfig]) -> list[str]:
    """Each provider whose proxy (the catalog's, or the environment's) cannot be used, in one
    line that names where it came from and never quotes it (it may hold a password)."""
    problems = []
    for provider in providers:
        try:
            proxy_for(provider.base_url, provider.proxy)
        except ValueError as exc:
            where = "its catalog proxy" if provider.proxy else "the environment's proxy"
            problems.append(f"provider {provider.name}: {where}: {exc}")
    return problems
