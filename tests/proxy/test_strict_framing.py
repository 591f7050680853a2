"""Framing as strict as llhttp's strict mode (issue 20): each answer an independent check found
the provider client too lenient with, refused now, on the bytes alone and on the wire (where a
lenient reading left a request waiting for the read timeout, or a connection reused)."""

import asyncio
import gzip
import time

import pytest

from gateway.proxy.forward.http1 import Chunked, Decoder, ProtocolViolation, parse_head
from gateway.proxy.forward.provider_client import ProviderPool
from gateway.proxy.forward.provider_connection import UpstreamBroken
from tests.scripted_provider import ScriptedProvider, json_answer, read_all, sends


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 200 O\x00K",  # NUL in the status line
        b"HTTP/1.1 200 O\rK",  # CR in the status line
        b"HTTP/1.1 200 OK\r\nX A: 1",  # a space in a field name
        b"HTTP/1.1 200 OK\r\nX\x7fA: 1",  # DEL in a field name
        b"HTTP/1.1 200 OK\r\nX(A): 1",  # a separator in a field name
    ],
)
def test_a_status_line_or_field_name_that_is_not_strict_http_is_refused(raw: bytes) -> None:
    with pytest.raises(ProtocolViolation):
        parse_head(raw)


@pytest.mark.parametrize(
    "wire",
    [
        b"5;ext=a\nb\r\nhello\r\n0\r\n\r\n",  # a bare LF inside a chunk extension
        b"5;ext=\x01\r\nhello\r\n0\r\n\r\n",  # a control character in it
        b"5\r\nhello\r\n0\r\nBad Trailer: x\r\n\r\n",  # a trailer name that is not a token
        b"5\r\nhello\r\n0\r\nno-colon\r\n\r\n",
    ],
)
def test_chunk_lines_and_trailers_are_checked(wire: bytes) -> None:
    with pytest.raises(ProtocolViolation):
        Chunked().feed(wire)


def test_a_valid_extension_and_trailer_still_pass() -> None:
    payload, rest = Chunked().feed(b"5;name=value\r\nhello\r\n0\r\nX-Checksum: 1\r\n\r\n")
    assert (payload, rest) == (b"hello", b"")


def test_a_cut_off_gzip_body_is_refused_at_its_end() -> None:
    whole = gzip.compress(b'{"answer": "' + b"x" * 2000 + b'"}')
    decoder = Decoder("gzip")
    decoder.decode(whole[: len(whole) // 2])
    with pytest.raises(ProtocolViolation):
        decoder.finish()
    complete = Decoder("gzip")
    complete.decode(whole)
    complete.finish()  # a whole body ends cleanly


async def _answered(*answers: bytes) -> tuple[ScriptedProvider, ProviderPool]:
    provider = ScriptedProvider([sends(answer) for answer in answers])
    url = await provider.start()
    return provider, ProviderPool("strict", url, {}, connect_timeout=2, read_timeout=30)


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\n\r\n{}",  # ends "\n\r\n"
        b"HTTP/1.1 200 OK\nContent-Length: 2\r\n\r\n{}",  # a bare LF after the status
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\n{}",  # ends "\r\n\n"
    ],
)
async def test_a_bare_lf_in_a_head_fails_at_once_not_after_the_read_timeout(head: bytes) -> None:
    provider, pool = await _answered(head)
    try:
        started = time.monotonic()
        with pytest.raises(UpstreamBroken) as broke:
            await read_all(pool)
        assert broke.value.kind == "protocol" and time.monotonic() - started < 2
    finally:
        await pool.close()
        await provider.stop()


async def test_the_head_size_limit_does_not_depend_on_how_reads_split_it() -> None:
    big = b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (70 * 1024) + b"\r\nContent-Length: 2\r\n\r\n{}"
    provider, pool = await _answered(big)  # the whole head in one write
    try:
        with pytest.raises(UpstreamBroken):
            await read_all(pool)
    finally:
        await pool.close()
        await provider.stop()


async def test_a_bare_lf_in_a_chunk_extension_retires_the_connection() -> None:
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;x\ny\r\n{}\r\n0\r\n\r\n"
    provider, pool = await _answered(chunked, json_answer(b"next"))
    try:
        with pytest.raises(UpstreamBroken):
            await read_all(pool)
        assert await read_all(pool) == (200, b"next")
        assert provider.connections == 2  # not reused
    finally:
        await pool.close()
        await provider.stop()


async def test_a_cut_off_gzip_answer_is_a_provider_error() -> None:
    whole = gzip.compress(b'{"a": "' + b"x" * 5000 + b'"}')
    cut = whole[: len(whole) // 2]
    head = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(cut)
    provider, pool = await _answered(head + cut)
    try:
        with pytest.raises(UpstreamBroken) as broke:
            await asyncio.wait_for(read_all(pool), 5)
        assert broke.value.kind == "protocol"
    finally:
        await pool.close()
        await provider.stop()
