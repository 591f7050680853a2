"""The provider client (gateway/proxy/forward/provider_client.py) over TLS: a throwaway CA and
server certificates made with the openssl command line at test time, a scripted https provider on
loopback, and pools that trust that CA through `tls=` (or only the system store, which does not
trust it)."""

import asyncio
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.proxy.forward.provider_client import ProviderPool
from gateway.proxy.forward.provider_connection import UpstreamBroken
from tests.scripted_provider import WAIT, Answer, ScriptedProvider, json_answer, read_all, sends

OPENSSL = shutil.which("openssl")
pytestmark = pytest.mark.skipif(
    OPENSSL is None, reason="no openssl command line to make the test certificates with"
)

NEW_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")  # fast to make
SECRET = "Bearer sk-tls-test-secret"

# One config for every certificate: the CA, the provider's (127.0.0.1 and localhost), and one
# the same CA signed for another name only. Key identifiers and critical constraints keep the
# chain valid under OpenSSL's strict verification too.
OPENSSL_CONFIG = """\
[req]
distinguished_name = dn
prompt = no

[dn]
CN = unused

[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash

[provider]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always

[elsewhere]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:elsewhere.invalid
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
"""


@dataclass(frozen=True)
class Identity:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Certificates:
    ca: Path
    provider: Identity  # for 127.0.0.1 and localhost
    elsewhere: Identity  # same CA, another name only


def openssl(directory: Path, *args: str) -> None:
    assert OPENSSL is not None
    done = subprocess.run(
        [OPENSSL, *args], cwd=directory, capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode != 0:
        pytest.fail(f"openssl {args[0]} failed: {done.stderr.strip()}")


def issue(directory: Path, name: str, serial: int) -> Identity:
    key, cert = f"{name}.key", f"{name}.pem"
    openssl(
        directory, "req", "-new", *NEW_KEY, "-keyout", key, "-config", "openssl.cnf",
        "-subj", f"/CN={name}", "-out", f"{name}.csr",
    )  # fmt: skip
    openssl(
        directory, "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-set_serial", str(serial), "-days", "2", "-sha256",
        "-extfile", "openssl.cnf", "-extensions", name, "-out", cert,
    )  # fmt: skip
    return Identity(directory / cert, directory / key)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    directory = tmp_path_factory.mktemp("tls")
    (directory / "openssl.cnf").write_text(OPENSSL_CONFIG)
    openssl(
        directory, "req", "-x509", *NEW_KEY, "-keyout", "ca.key",
        "-config", "openssl.cnf", "-extensions", "ca",
        "-subj", "/CN=gateway test CA (throwaway)", "-days", "2", "-sha256", "-out", "ca.pem",
    )  # fmt: skip
    return Certificates(
        ca=directory / "ca.pem",
        provider=issue(directory, "provider", 2),
        elsewhere=issue(directory, "elsewhere", 3),
    )


def server_context(identity: Identity) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(identity.cert, identity.key)
    return context


@pytest.fixture
def trusting(certificates: Certificates) -> ssl.SSLContext:
    """A client context that trusts the throwaway CA (and nothing else)."""
    return ssl.create_default_context(cafile=str(certificates.ca))


Make = Callable[..., Awaitable[tuple[ScriptedProvider, ProviderPool]]]


@pytest.fixture
async def provide(certificates: Certificates) -> AsyncIterator[Make]:
    made: list[tuple[ScriptedProvider, ProviderPool]] = []

    async def make(
        *answers: Answer, tls: ssl.SSLContext | None, identity: Identity | None = None
    ) -> tuple[ScriptedProvider, ProviderPool]:
        provider = ScriptedProvider(
            list(answers), server_context(identity or certificates.provider)
        )
        url = await provider.start()
        pool = ProviderPool(
            "tls-sim",
            url,
            {"Content-Type": "application/json", "Authorization": SECRET},
            connect_timeout=WAIT,
            read_timeout=WAIT,
            tls=tls,
        )
        made.append((provider, pool))
        return provider, pool

    yield make
    for provider, pool in made:
        await pool.close()
        await provider.stop()


async def test_a_provider_with_a_private_ca_answers_over_one_kept_alive_connection(
    provide: Make, trusting: ssl.SSLContext
) -> None:
    provider, pool = await provide(
        sends(json_answer(b'{"a":1}')), sends(json_answer(b'{"b":2}')), tls=trusting
    )
    assert await read_all(pool, b'{"q":1}') == (200, b'{"a":1}')
    assert await read_all(pool, b'{"q":2}') == (200, b'{"b":2}')
    assert provider.connections == 1  # one TLS handshake for both requests
    first = provider.requests[0]
    assert first.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    assert f"\r\nAuthorization: {SECRET}\r\n".encode() in first
    assert first.endswith(b'\r\n\r\n{"q":1}')


async def test_an_untrusted_certificate_is_a_connect_failure_and_the_secret_stays_home(
    provide: Make,
) -> None:
    # tls=None: the system store, which has never heard of the throwaway CA.
    provider, pool = await provide(sends(json_answer(b"never")), tls=None)
    with pytest.raises(UpstreamBroken) as failure:
        await asyncio.wait_for(pool.post("/chat/completions", b"{}"), WAIT)
    assert failure.value.kind == "connect"
    assert SECRET not in str(failure.value)
    assert "sk-" not in str(failure.value)
    assert provider.requests == []  # no request (so no secret) went over the connection
    assert provider.connections == 0


async def test_a_certificate_for_another_name_is_a_connect_failure(
    provide: Make, trusting: ssl.SSLContext, certificates: Certificates
) -> None:
    # The same trusted CA signed both; only the one for 127.0.0.1 is accepted: the name counts.
    _, named = await provide(sends(json_answer(b"ok")), tls=trusting)
    assert await read_all(named) == (200, b"ok")
    provider, pool = await provide(
        sends(json_answer(b"never")), tls=trusting, identity=certificates.elsewhere
    )
    with pytest.raises(UpstreamBroken) as failure:
        await asyncio.wait_for(pool.post("/chat/completions", b"{}"), WAIT)
    assert failure.value.kind == "connect"
    assert provider.requests == []


async def test_a_chunked_stream_over_tls_arrives_piece_by_piece(
    provide: Make, trusting: ssl.SSLContext
) -> None:
    send_first, go_on = asyncio.Event(), asyncio.Event()

    async def answer(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        await writer.drain()
        await send_first.wait()
        writer.write(b"7\r\ndata: 1\r\n")
        await writer.drain()
        await go_on.wait()
        writer.write(b"7\r\ndata: 2\r\n0\r\n\r\n")

    provider, pool = await provide(answer, sends(json_answer(b"next")), tls=trusting)
    response = await asyncio.wait_for(pool.post("/chat/completions", b"{}"), WAIT)
    assert response.status == 200
    assert response.headers.get("Transfer-Encoding") == "chunked"
    # The reader is already waiting when the first piece is sent, and the provider holds
    # back the rest: that piece must be handed over on its own.
    reading = asyncio.create_task(response.readany())
    await asyncio.sleep(0.05)
    assert not reading.done()
    send_first.set()
    assert await asyncio.wait_for(reading, WAIT) == b"data: 1"
    assert not go_on.is_set()
    go_on.set()
    assert await asyncio.wait_for(response.readany(), WAIT) == b"data: 2"
    assert await asyncio.wait_for(response.readany(), WAIT) == b""
    response.release()
    assert await read_all(pool) == (200, b"next")
    assert provider.connections == 1


async def _ragged(writer: asyncio.StreamWriter) -> None:
    """An answer framed by the connection's end, which then ends without TLS close_notify."""
    writer.write(b'HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{"until": "close"}')
    await writer.drain()
    await asyncio.sleep(0.05)
    transport = writer.transport
    inner = getattr(transport, "_ssl_protocol", None)  # asyncio's TLS over its TCP transport
    (inner._transport if inner is not None else transport).abort()  # TCP closed under the TLS


async def _ragged_answer(certificates: Certificates) -> tuple[int, bytes]:
    provider = ScriptedProvider([_ragged], server_context(certificates.provider))
    url = await provider.start()
    pool = ProviderPool(
        "ragged",
        url,
        {},
        connect_timeout=WAIT,
        read_timeout=WAIT,
        tls=ssl.create_default_context(cafile=str(certificates.ca)),
    )
    try:
        return await read_all(pool)
    finally:
        await pool.close()
        await provider.stop()


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_tls_answer_ending_without_close_notify_reads_the_same_on_both_loops(
    certificates: Certificates, loop: str
) -> None:
    """asyncio reports the ragged end as an end of file, uvloop only as the connection lost:
    both now take it as the end of an answer framed by the connection's end."""
    if loop == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        factory = uvloop.new_event_loop
    else:
        factory = asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        assert runner.run(_ragged_answer(certificates)) == (200, b'{"until": "close"}')
