"""HTTP/1.1 response framing (RFC 9112) for the provider client: the head, and where the body
ends. No I/O here, so every rule can be tested on bytes alone.

Strict where a lenient reading could split one answer into two or join two into one (a
conflicting Content-Length, a malformed chunk size, bytes after the body): such an answer is a
ProtocolViolation, and its connection is never used again. As strict as llhttp's strict mode on
what it refuses (tests/proxy/test_http1.py lists each case): a bare LF anywhere in the head or a
chunk line, CR, LF or NUL in the status line, a header or trailer name that is not a token, a
control character in a chunk extension, a head over MAX_HEAD_BYTES however it was split into
reads, and a compressed body that ends before its compressed data does.

Why our own framing rather than a C parser (httptools, i.e. llhttp): the stack is fixed
(aiohttp, redis, orjson, prometheus-client, pydantic-settings), and a provider's answers are few
and small to frame: a head split once per request and a body passed through; the profile puts
this module under 3% of the gateway's CPU (README, Performance).
"""

import zlib
from dataclasses import dataclass

MAX_HEAD_BYTES = 64 * 1024
MAX_DECODED_PIECE = 1024 * 1024  # one decompression step's output, so a bomb cannot flood memory
_NO_BODY = frozenset({204, 304})
_HEX = b"0123456789abcdefABCDEF"
# RFC 9110 tchar: what a field name (and a chunk extension's name) may be made of.
_TOKEN = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


class ProtocolViolation(Exception):
    """The provider's bytes are not an HTTP/1.1 answer we can frame safely."""


class Headers:
    """Response headers, read case-insensitively; a repeated header's values joined by ', '."""

    __slots__ = ("_values",)

    def __init__(self, values: dict[str, str]) -> None:
        self._values = values  # lower-case name -> value

    def get(self, name: str, default: str | None = None) -> str | None:
        return self._values.get(name.lower(), default)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._values


@dataclass(slots=True, frozen=True)
class ResponseHead:
    status: int
    reason: str
    headers: Headers
    keep_alive: bool  # the connection may carry another request once this body is read


def _smuggles(line: bytes) -> bool:
    """CR, LF or NUL inside a line: a header smuggled into another."""
    return b"\r" in line or b"\n" in line or b"\0" in line


def bare_line_feed(data: bytes) -> bool:
    """An LF not preceded by CR: lines ended that way could be read two ways."""
    return data.count(b"\n") != data.count(b"\r\n")


def parse_head(raw: bytes) -> ResponseHead:
    """The status line and header fields, without the blank line that ends them."""
    lines = raw.split(b"\r\n")
    version, _, rest = lines[0].partition(b" ")
    code, _, reason = rest.partition(b" ")
    if version not in (b"HTTP/1.1", b"HTTP/1.0") or len(code) != 3 or not code.isdigit():
        raise ProtocolViolation("not an HTTP/1.x status line")
    if _smuggles(lines[0]):
        raise ProtocolViolation("a control character in the status line")
    values: dict[str, str] = {}
    for line in lines[1:]:  # field_line's rules, written out (the head's hot loop)
        name, colon, value = line.partition(b":")
        if not colon or not name or name.translate(None, _TOKEN) or _smuggles(line):
            raise ProtocolViolation("malformed header line")
        key = name.decode("latin-1").lower()
        text = value.strip(b" \t").decode("latin-1")
        values[key] = f"{values[key]}, {text}" if key in values else text
    connection = values.get("connection", "").lower()
    keep_alive = version == b"HTTP/1.1" and "close" not in connection
    return ResponseHead(int(code), reason.decode("latin-1"), Headers(values), keep_alive)


def field_line(line: bytes) -> tuple[str, str]:
    """A header (or trailer) line as (lower-case name, value); ProtocolViolation if malformed."""
    name, colon, value = line.partition(b":")
    if not colon or not name or name.translate(None, _TOKEN) or _smuggles(line):
        raise ProtocolViolation("malformed header line")
    return name.decode("latin-1").lower(), value.strip(b" \t").decode("latin-1")


class Body:
    """Where a body ends. `feed` takes the bytes that came and returns (payload, leftover):
    leftover is what came after the body's end, and is only ever non-empty once `done`."""

    done = False
    reusable = True  # whether the connection's framing survives this body (see UntilClose)

    def feed(self, data: bytes) -> tuple[bytes, bytes]:
        raise NotImplementedError

    def eof(self) -> None:
        """The connection ended: fine for a body that ends with it, else ProtocolViolation."""
        if not self.done:
            raise ProtocolViolation("the connection closed before the answer's end")


class Empty(Body):
    done = True

    def feed(self, data: bytes) -> tuple[bytes, bytes]:
        return b"", data


class Length(Body):
    def __init__(self, size: int) -> None:
        self._left = size
        self.done = size == 0

    def feed(self, data: bytes) -> tuple[bytes, bytes]:
        if len(data) < self._left:
            self._left -= len(data)
            return data, b""
        payload, rest = data[: self._left], data[self._left :]
        self._left = 0
        self.done = True
        return payload, rest


class UntilClose(Body):
    reusable = False

    def feed(self, data: bytes) -> tuple[bytes, bytes]:
        return data, b""

    def eof(self) -> None:
        self.done = True


class Chunked(Body):
    """Transfer-Encoding: chunked. Chunk extensions are skipped and trailers dropped."""

    def __init__(self) -> None:
        self._pending = b""  # an unfinished size line, chunk end or trailer line
        self._left = 0  # bytes of the current chunk still to come
        self._state = "size"  # size | data | data-end | trailer

    def feed(self, data: bytes) -> tuple[bytes, bytes]:
        if self._pending:
            data, self._pending = self._pending + data, b""
        out: list[bytes] = []
        at = 0
        end = len(data)
        while at < end and not self.done:
            if self._state == "data":
                take = min(self._left, end - at)
                out.append(data[at : at + take])
                at += take
                self._left -= take
                if self._left == 0:
                    self._state = "data-end"
                continue
            eol = data.find(b"\r\n", at)
            if eol < 0:
                if end - at > 4096:
                    raise ProtocolViolation("a chunk size or trailer line is too long")
                self._pending = data[at:]
                break
            line = data[at:eol]
            at = eol + 2
            if self._state == "size":
                # Most size lines are bare hex: one check, then int() (which alone would take
                # "0x1f", "+1f" or " 1f").
                plain = line and len(line) <= 16 and not line.strip(_HEX)
                self._left = int(line, 16) if plain else _chunk_size(line)
                self._state = "data" if self._left else "trailer"
            elif self._state == "data-end":
                if line:
                    raise ProtocolViolation("a chunk is longer than its size")
                self._state = "size"
            elif not line:  # the blank line after the trailers: the end
                self.done = True
            else:
                field_line(line)  # a trailer: checked as a header is, then dropped
        return b"".join(out), data[at:] if self.done else b""


def _chunk_size(line: bytes) -> int:
    """A size line with an extension (or a malformed one): checked whole."""
    if b"\n" in line:
        raise ProtocolViolation("a bare LF in a chunk line")
    digits, _, extension = line.partition(b";")
    digits = digits.strip(b" \t")
    if not digits or len(digits) > 16 or digits.strip(_HEX):
        raise ProtocolViolation("malformed chunk size")
    if extension and any((c < 0x20 and c != 0x09) or c == 0x7F for c in extension):
        raise ProtocolViolation("a control character in a chunk extension")
    return int(digits, 16)


def body_of(head: ResponseHead) -> Body:
    """RFC 9112 section 6.3, for answers to POST."""
    if head.status in _NO_BODY:
        return Empty()
    encoding = head.headers.get("transfer-encoding")
    if encoding is not None:
        if encoding.rsplit(",", 1)[-1].strip().lower() == "chunked":
            chunked = Chunked()
            # With a Content-Length too, the answer was framed by a confused sender: read it
            # as chunked, then retire the connection (RFC 9112 section 6.3).
            chunked.reusable = "content-length" not in head.headers
            return chunked
        return UntilClose()
    length = head.headers.get("content-length")
    if length is None:
        return UntilClose()
    sizes = {part.strip() for part in length.split(",")}
    size = sizes.pop() if len(sizes) == 1 else ""
    if not (size.isascii() and size.isdigit()) or len(size) > 18:
        raise ProtocolViolation("invalid Content-Length")
    return Length(int(size))


class Decoder:
    """Content-Encoding gzip or deflate, undone a bounded piece at a time. A gzip body of
    several members is decoded whole; anything else after the compressed data is an error."""

    def __init__(self, encoding: str) -> None:
        if encoding not in ("gzip", "x-gzip", "deflate"):
            raise ProtocolViolation("unsupported Content-Encoding")
        self._raw_deflate_allowed = (
            encoding == "deflate"
        )  # some servers send it without zlib's header
        self._started = False
        self._zlib = zlib.decompressobj(_GZIP_OR_ZLIB)
        self.tail = b""  # input not yet decoded, held back to keep each piece bounded

    def decode(self, data: bytes) -> bytes:
        pending = self.tail + data if self.tail else data
        out: list[bytes] = []
        room = MAX_DECODED_PIECE
        for _ in range(len(pending) + 1):  # each turn consumes input or ends
            if not pending or room <= 0:
                break
            if self._zlib.eof:
                if not pending.startswith(b"\x1f\x8b"):
                    raise ProtocolViolation("bytes after the compressed body")
                self._zlib = zlib.decompressobj(_GZIP_OR_ZLIB)  # the next gzip member
            piece = self._inflate(pending, room)
            out.append(piece)
            room -= len(piece)
            pending = self._zlib.unused_data if self._zlib.eof else self._zlib.unconsumed_tail
        self.tail = pending
        return b"".join(out)

    def finish(self) -> None:
        """The body ended: so must its compressed data (a cut-off gzip is a provider error)."""
        if self._started and not self._zlib.eof:
            raise ProtocolViolation("the compressed body ends before its compressed data")

    def _inflate(self, data: bytes, room: int) -> bytes:
        try:
            piece = self._zlib.decompress(data, room)
        except zlib.error:
            if self._started or not self._raw_deflate_allowed:
                raise ProtocolViolation("undecodable compressed body") from None
            self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)
            self._raw_deflate_allowed = False
            return self._inflate(data, room)
        self._started = True
        return piece


_GZIP_OR_ZLIB = 32 + zlib.MAX_WBITS  # either header, whichever it is


def decoder_for(head: ResponseHead) -> Decoder | None:
    encoding = (head.headers.get("content-encoding") or "identity").strip().lower()
    return None if encoding == "identity" else Decoder(encoding)
