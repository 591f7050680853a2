"""A whole deployment in one work directory, for the fault tests and the soak: Redis on its own
append-only file, the simulated provider in its own process, and `gateway serve` as a real process,
each of which a test can stop, kill and start again.
"""

import secrets
import signal
import textwrap
from pathlib import Path

from bench.procs import Child, python_child
from bench.scenario import admin_call
from gateway.redis_server import RedisServer, free_port

PAID_MODELS = ["fault/paid", "fault/fast"]
FREE_MODELS = ["fault/free:free"]
STREAM_MODEL = "fault/long-stream"
SLOW_MODEL = "fault/slow"  # answers after 2 s


def catalog_toml(path: Path, provider_url: str) -> Path:
    """Paid models that answer at once, after 50 ms or after 2 s, a free one, a long stream,
    and a flood (a stream of 200 MB, as fast as it is read)."""
    pricing = '[models.pricing]\nprompt = "0.00000015"\ncompletion = "0.0000006"\n'
    path.write_text(
        textwrap.dedent(f"""\
        [[providers]]
        name = "sim"
        base_url = "{provider_url}/v1"

        [[models]]
        id = "fault/paid"
        provider = "sim"
        upstream_model = "sim-delay"
        max_output_tokens = 100
        """)
        + pricing
        + textwrap.dedent("""
        [[models]]
        id = "fault/fast"
        provider = "sim"
        upstream_model = "sim-gpt"
        max_output_tokens = 100
        """)
        + pricing
        + textwrap.dedent("""
        [[models]]
        id = "fault/free:free"
        provider = "sim"
        upstream_model = "sim-free"

        [[models]]
        id = "fault/long-stream"
        provider = "sim"
        upstream_model = "sim-slowstream"
        max_output_tokens = 1000
        """)
        + pricing
        + textwrap.dedent("""
        [[models]]
        id = "fault/slow"
        provider = "sim"
        upstream_model = "sim-slow"
        max_output_tokens = 100
        """)
        + pricing
        + textwrap.dedent("""
        [[models]]
        id = "fault/flood"
        provider = "sim"
        upstream_model = "sim-flood"
        max_output_tokens = 1000
        """)
        + pricing
    )
    return path


LIMITS = """\
[[limits]]
name = "free-per-minute"
match = "free"
unit = "minute"
requests = 600

[[limits]]
name = "free-per-day"
match = "free"
unit = "day"
requests = 1000000
"""


class Stack:
    def __init__(
        self,
        workdir: Path,
        *,
        appendfsync: str = "everysec",
        gateway_env: dict[str, str] | None = None,
    ) -> None:
        self.workdir = workdir
        self.admin_token = secrets.token_urlsafe(24)
        self.redis = RedisServer(workdir / "redis", port=free_port(), appendfsync=appendfsync)
        self.provider_url = f"http://127.0.0.1:{free_port()}"
        self.url = f"http://127.0.0.1:{free_port()}"
        self.gateway_env = gateway_env or {}
        self.provider: Child | None = None
        self.gateway: Child | None = None
        self._gateway_runs = 0

    def start(self) -> "Stack":
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.redis.start()
        port = self.provider_url.rsplit(":", 1)[1]
        self.provider = python_child(
            "provider", ["-m", "bench.mock_provider", "--port", port], self.workdir, {}
        )
        self.provider.wait_http(self.provider_url + "/_sim/stats")
        self.start_gateway()
        return self

    def start_gateway(self) -> Child:
        self._gateway_runs += 1
        toml = catalog_toml(self.workdir / "gateway.toml", self.provider_url)
        limits = self.workdir / "limits.toml"
        limits.write_text(LIMITS)
        env = {
            "GATEWAY_REDIS_URL": self.redis.url,
            "GATEWAY_ADMIN_TOKEN": self.admin_token,
            "GATEWAY_DATA_DIR": str(self.workdir / "data"),
            "GATEWAY_LIMITS_FILE": str(limits),
            "GATEWAY_LOG_FORMAT": "json",
            "GATEWAY_JOURNAL_REPLAY_SECONDS": "0.2",
            **self.gateway_env,
        }
        port = self.url.rsplit(":", 1)[1]
        self.gateway = python_child(
            f"gateway-{self._gateway_runs}",
            ["-m", "gateway", "serve", "--config", str(toml), "--port", port],
            self.workdir,
            env,
            cwd=self.workdir,
        )
        self.gateway.wait_http(self.url + "/readyz", timeout=60)
        return self.gateway

    def kill_gateway(self) -> None:
        assert self.gateway is not None
        self.gateway.proc.send_signal(signal.SIGKILL)
        self.gateway.stop()

    def kill_redis(self) -> None:
        """SIGKILL: no chance to flush anything."""
        process, self.redis.process = self.redis.process, None
        assert process is not None
        process.kill()
        process.wait(10)

    def gateway_logs(self) -> list[str]:
        lines: list[str] = []
        for run in range(1, self._gateway_runs + 1):
            path = self.workdir / f"gateway-{run}.log"
            if path.exists():
                lines += path.read_text(errors="replace").splitlines()
        return lines

    def new_account(self, grant: str = "0", purchase: str | None = None) -> tuple[str, str]:
        """(account id, API key)."""
        account = admin_call(
            self.url + "/admin/v1/accounts", self.admin_token, {"name": "fault", "grant": grant}
        )
        if purchase is not None:
            admin_call(
                f"{self.url}/admin/v1/accounts/{account['id']}/purchases",
                self.admin_token,
                {"amount": purchase, "method": "card", "idempotency_key": secrets.token_hex(8)},
            )
        key = admin_call(
            f"{self.url}/admin/v1/accounts/{account['id']}/keys", self.admin_token, {"name": "k"}
        )
        return account["id"], key["key"]

    def stop(self) -> None:
        for child in (self.gateway, self.provider):
            if child is not None:
                child.stop()
        self.redis.stop()
