"""The embedded Redis launcher: a unix socket with AOF, no orphan after SIGKILL, clear errors."""

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from redis.asyncio import Redis

from gateway.runtime import redis_server
from gateway.runtime.redis_server import RedisBinaryMissing, RedisServer, find_binaries
from tests.processes import wait_until


@pytest.mark.parametrize("index", [0, 1], ids=["first-binary", "second-binary"])
def test_embedded_server_on_a_unix_socket_with_aof(tmp_path: Path, index: int) -> None:
    binaries = find_binaries()
    if index >= len(binaries):
        pytest.skip("this machine has only one kind of Redis server")
    server = RedisServer(tmp_path, binary=binaries[index]).start()
    try:
        assert server.socket_path.exists()

        async def check() -> tuple[str, str]:
            r = Redis.from_url(server.url, decode_responses=True)
            try:
                await r.set("k", "v")
                aof = (await r.config_get("appendonly"))["appendonly"]
                fsync = (await r.config_get("appendfsync"))["appendfsync"]
                return aof, fsync
            finally:
                await r.aclose()

        assert asyncio.run(check()) == ("yes", "everysec")
        pid = server.process.pid if server.process else 0
    finally:
        server.stop()
    assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


def test_server_dies_with_its_parent_even_after_sigkill(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from gateway.runtime.redis_server import RedisServer
        server = RedisServer(Path({str(tmp_path)!r})).start()
        print(server.process.pid, flush=True)
        time.sleep(60)
    """)
    parent = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parent.parent.parent,
    )
    try:
        assert parent.stdout is not None
        redis_pid = int(parent.stdout.readline())
        assert Path(f"/proc/{redis_pid}").exists()
        parent.send_signal(signal.SIGKILL)
        parent.wait(5)
        assert wait_until(
            lambda: not Path(f"/proc/{redis_pid}").exists() or _is_zombie(redis_pid), 10
        ), "redis outlived its killed parent"
    finally:
        if parent.poll() is None:
            parent.kill()


def test_missing_binary_is_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(redis_server, "bundled_valkey", lambda: None)
    with pytest.raises(RedisBinaryMissing) as caught:
        redis_server.find_binary()
    message = str(caught.value)
    assert "\n" not in message
    assert "apt-get install redis-server" in message and "GATEWAY_REDIS_URL" in message


def test_a_second_gateway_on_the_same_data_dir_is_refused(tmp_path: Path) -> None:
    with (
        RedisServer(tmp_path),
        pytest.raises(redis_server.RedisStartFailed, match="GATEWAY_DATA_DIR"),
    ):
        RedisServer(tmp_path).start()
    assert os.path.exists(tmp_path / "appendonlydir") or os.path.exists(tmp_path / "appendonly.aof")
