"""HTTP/1.1 answer framing (gateway/proxy/forward/http1.py), on bytes: where a provider's answer
ends is never guessed, whatever way its bytes are cut into reads."""

import gzip
import zlib

import pytest

from gateway.proxy.forward.http1 import (
    MAX_DECODED_PIECE,
    Chunked,
    Empty,
    Length,
    ProtocolViolation,
    UntilClose,
    body_of,
    decoder_for,
    parse_head,
)


def test_a_head_reads_case_insensitively_and_joins_repeated_fields() -> None:
    head = parse_head(
        b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\nX-A: 1\r\nx-a: 2\r\nEmpty:"
    )
    assert (head.status, head.reason) == (429, "Too Many Requests")
    assert head.headers.get("retry-after") == "7"
    assert head.headers.get("RETRY-AFTER") == "7"
    assert head.headers.get("X-A") == "1, 2"
    assert head.headers.get("empty") == ""
    assert head.headers.get("missing", "d") == "d"
    assert head.keep_alive


@pytest.mark.parametrize(
    ("raw", "keep_alive"),
    [
        (b"HTTP/1.1 200 OK\r\nConnection: close", False),
        (b"HTTP/1.1 200 OK\r\nConnection: Keep-Alive", True),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 0", False),
        (b"HTTP/1.1 200", True),  # no reason phrase is allowed
    ],
)
def test_keep_alive_follows_the_version_and_connection_field(raw: bytes, keep_alive: bool) -> None:
    assert parse_head(raw).keep_alive is keep_alive


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/2 200 OK",
        b"SPDY/1.1 200 OK",
        b"HTTP/1.1 20 OK",
        b"HTTP/1.1 2xx OK",
        b"HTTP/1.1 200 OK\r\nContent-Length : 5",  # whitespace before the colon
        b"HTTP/1.1 200 OK\r\nX-A: 1\r\n  folded",  # obsolete line folding
        b"HTTP/1.1 200 OK\r\nno colon here",
        b"HTTP/1.1 200 OK\r\n: no name",
        b"HTTP/1.1 200 OK\r\nRetry-After: 1\nX-Smuggled: yes",  # a bare LF inside a line
        b"HTTP/1.1 200 OK\r\nX-A: a\0b",
    ],
)
def test_a_malformed_head_is_refused(raw: bytes) -> None:
    with pytest.raises(ProtocolViolation):
        parse_head(raw)


def framing(raw_head: bytes) -> object:
    return body_of(parse_head(raw_head))


def test_the_body_rules_of_rfc_9112() -> None:
    assert isinstance(framing(b"HTTP/1.1 204 No Content\r\nContent-Length: 10"), Empty)
    assert isinstance(framing(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked"), Chunked)
    both = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: gzip, chunked"
    chunked_too = framing(both)
    assert isinstance(chunked_too, Chunked)  # Transfer-Encoding wins,
    assert not chunked_too.reusable  # and the confused connection is retired
    assert isinstance(framing(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip"), UntilClose)
    assert isinstance(framing(b"HTTP/1.1 200 OK"), UntilClose)
    assert isinstance(framing(b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5"), Length)
    for bad in (b"5, 6", b"-1", b"abc", b"9" * 30, b"\xb2"):
        with pytest.raises(ProtocolViolation):
            framing(b"HTTP/1.1 200 OK\r\nContent-Length: " + bad)


def feed_in_pieces(body: object, data: bytes, size: int) -> tuple[bytes, bytes]:
    assert isinstance(body, Length | Chunked | UntilClose)
    out, rest = b"", b""
    for at in range(0, len(data), size):
        payload, leftover = body.feed(data[at : at + size])
        out += payload
        rest += leftover
    return out, rest


@pytest.mark.parametrize("size", [1, 2, 3, 7, 1000])
def test_a_chunked_body_is_the_same_however_it_is_cut(size: int) -> None:
    wire = b"5;ext=1\r\nhello\r\n1A\r\n" + b"x" * 26 + b"\r\n0\r\nTrailer-Field: yes\r\n\r\nNEXT"
    body = Chunked()
    out, rest = feed_in_pieces(body, wire, size)
    assert out == b"hello" + b"x" * 26
    assert body.done
    assert rest == b"NEXT"  # what follows the body is not part of it


@pytest.mark.parametrize(
    "wire",
    [
        b"zz\r\nhello\r\n",  # not a size
        b"5\r\nhello!!\r\n",  # a chunk longer than its size
        b"-5\r\nhello\r\n",
        b"1" * 5000,  # a size line that never ends
    ],
)
def test_a_malformed_chunked_body_is_refused(wire: bytes) -> None:
    with pytest.raises(ProtocolViolation):
        Chunked().feed(wire)


def test_a_length_body_stops_at_its_length_and_an_early_end_is_an_error() -> None:
    body = Length(5)
    assert body.feed(b"hel") == (b"hel", b"")
    assert not body.done
    assert body.feed(b"loEXTRA") == (b"lo", b"EXTRA")
    assert body.done

    short = Length(5)
    short.feed(b"hel")
    with pytest.raises(ProtocolViolation):
        short.eof()

    unterminated = Chunked()
    unterminated.feed(b"5\r\nhello\r\n")
    with pytest.raises(ProtocolViolation):
        unterminated.eof()


def test_a_body_that_ends_with_the_connection_ends_there_and_is_not_reused() -> None:
    body = UntilClose()
    assert body.feed(b"anything") == (b"anything", b"")
    assert not body.done
    body.eof()
    assert body.done
    assert not body.reusable


def test_gzip_and_deflate_are_decoded() -> None:
    for encoding, packed in (
        ("gzip", gzip.compress(b'{"ok": true}')),
        ("deflate", zlib.compress(b'{"ok": true}')),
    ):
        decoder = decoder_for(
            parse_head(f"HTTP/1.1 200 OK\r\nContent-Encoding: {encoding}".encode())
        )
        assert decoder is not None
        assert decoder.decode(packed[:5]) + decoder.decode(packed[5:]) == b'{"ok": true}'
    assert decoder_for(parse_head(b"HTTP/1.1 200 OK")) is None
    with pytest.raises(ProtocolViolation):
        decoder_for(parse_head(b"HTTP/1.1 200 OK\r\nContent-Encoding: br"))


def test_a_compression_bomb_is_decoded_a_bounded_piece_at_a_time() -> None:
    bomb = gzip.compress(b"\0" * (20 * MAX_DECODED_PIECE))
    decoder = decoder_for(parse_head(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip"))
    assert decoder is not None
    total, steps = len(decoder.decode(bomb)), 1
    while decoder.tail and steps < 100:
        piece = decoder.decode(b"")
        assert len(piece) <= MAX_DECODED_PIECE
        total, steps = total + len(piece), steps + 1
    assert total == 20 * MAX_DECODED_PIECE
    assert steps >= 20
