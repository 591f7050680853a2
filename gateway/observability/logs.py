"""Logging: one structured line per request (`gateway.access`), and every other log line in the
same format. `log_format` json, text, or auto (text in a terminal, JSON otherwise); `log_level`.
Nothing secret is ever a field: a key appears only as the first 12 characters of its hash.

The access lines skip the logging module: a record, a handler and a flushed write per request
cost the gateway about a sixth of its throughput. They are formatted with orjson and written in
batches, at most ACCESS_FLUSH_SECONDS late (and on exit).
"""

import asyncio
import atexit
import logging
import re
import sys
import time
from typing import Any, BinaryIO

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

ACCESS = logging.getLogger("gateway.access")
_QUOTED = re.compile(r"[:'\"\n]")


def describe(exc: BaseException | None) -> str:
    """The kind of problem a request that cannot be parsed has, never its bytes: aiohttp's
    messages start with a fixed phrase and then quote the request (after a colon, a quote or a
    line break)."""
    if isinstance(exc, HttpProcessingError):
        what = _QUOTED.split(exc.message or "", maxsplit=1)[0].strip()[:80]
        return f"{type(exc).__name__}: {what}" if what else type(exc).__name__
    return type(exc).__name__ if exc is not None else "unknown"


class MalformedRequestFilter(logging.Filter):
    """aiohttp logs a request it cannot parse (a bad header line, one too long, a body whose
    encoding is broken) at ERROR with a traceback whose message quotes the offending bytes, so an
    API key in a broken Authorization line would reach the log, and anyone could fill the error
    log. Such a record becomes one INFO line that names the problem and quotes nothing; so does
    a client that hung up mid-request."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            problem = describe(exc)
        elif isinstance(exc, web.RequestPayloadError):
            problem = "RequestPayloadError: the body cannot be decoded"
        elif isinstance(exc, ConnectionResetError):
            problem = "the client closed the connection mid-request"
        else:
            return True
        record.msg, record.args = "malformed HTTP request refused (%s)", (problem,)
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        record.levelno, record.levelname = logging.INFO, "INFO"
        return True


# Installed when the gateway is imported, so that every server it runs (and every test) has it.
logging.getLogger("aiohttp.server").addFilter(MalformedRequestFilter())


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            text += " " + " ".join(f"{k}={v}" for k, v in fields.items() if v is not None)
        return text


ACCESS_FLUSH_SECONDS = 0.2
ACCESS_BUFFER_BYTES = 64 * 1024


class AccessLog:
    def __init__(self) -> None:
        self.stream: BinaryIO | None = None  # None: stderr
        self.json = True
        self._lines: list[bytes] = []
        self._size = 0
        self._scheduled = False
        self._second = -1
        self._second_text = ""

    def write(self, fields: dict[str, Any]) -> None:
        if not ACCESS.isEnabledFor(logging.INFO):
            return
        now = time.time()
        second = int(now)
        if second != self._second:  # strftime once a second, not once a line
            self._second = second
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        stamp = f"{self._second_text}.{int(now * 1000) % 1000:03d}Z"
        if self.json:
            line = orjson.dumps(
                {
                    "time": stamp,
                    "level": "info",
                    "logger": "gateway.access",
                    "message": "request",
                    **fields,
                },
                default=str,
            )
        else:
            text = " ".join(f"{k}={v}" for k, v in fields.items() if v is not None)
            line = f"{stamp} INFO gateway.access: request {text}".encode()
        self._lines.append(line + b"\n")
        self._size += len(line) + 1
        if self._size >= ACCESS_BUFFER_BYTES:
            self.flush()
        elif not self._scheduled:
            try:
                asyncio.get_running_loop().call_later(ACCESS_FLUSH_SECONDS, self.flush)
                self._scheduled = True
            except RuntimeError:
                self.flush()

    def flush(self) -> None:
        self._scheduled = False
        if not self._lines:
            return
        data, self._lines, self._size = b"".join(self._lines), [], 0
        stream = self.stream or sys.stderr.buffer
        try:
            stream.write(data)
            stream.flush()
        except (OSError, ValueError):
            pass  # a closed stderr must not take a request down


ACCESS_LOG = AccessLog()
atexit.register(ACCESS_LOG.flush)


def configure(level: str = "INFO", fmt: str = "auto") -> None:
    if fmt == "auto":
        fmt = "text" if sys.stderr.isatty() else "json"
    ACCESS_LOG.json = fmt == "json"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def access(fields: dict[str, Any]) -> None:
    ACCESS_LOG.write(fields)
