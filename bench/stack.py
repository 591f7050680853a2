"""A whole deployment in one work directory, for the fault tests and the soak: Redis on its own
append-only file (or a Redis Cluster of three masters and their replicas), the simulated provider
in its own process, and `gateway serve` as a real process (or several, each on its own port and
data directory, as on separate machines), each of which a test can stop, kill and start again.
"""

import secrets
import signal
from pathlib import Path

from bench.cluster import LocalCluster
from bench.procs import Child, python_child
from bench.scenario import admin_call
from gateway.runtime.redis_server import RedisServer, free_port

PAID_MODELS = ["fault/paid", "fault/fast"]
FREE_MODELS = ["fault/free:free"]
STREAM_MODEL = "fault/long-stream"
SLOW_MODEL = "fault/slow"  # answers after 2 s


# id -> (the simulated provider's behaviour, max_output_tokens; None: a free model)
MODELS: dict[str, tuple[str, int | None]] = {
    "fault/paid": ("sim-delay", 100),  # answers after 50 ms
    "fault/fast": ("sim-gpt", 100),
    "fault/free:free": ("sim-free", None),
    "fault/long-stream": ("sim-slowstream", 1000),  # 400 words, one every 20 ms
    "fault/slow": ("sim-slow", 100),  # answers after 2 s
    "fault/flood": ("sim-flood", 1000),  # 200 MB of stream, as fast as it is read
}


def catalog_toml(path: Path, provider_url: str) -> Path:
    blocks = [f'[[providers]]\nname = "sim"\nbase_url = "{provider_url}/v1"\n']
    for model_id, (upstream, max_output) in MODELS.items():
        block = f'[[models]]\nid = "{model_id}"\nprovider = "sim"\nupstream_model = "{upstream}"\n'
        if max_output is not None:
            block += f"max_output_tokens = {max_output}\n" + PRICING
        blocks.append(block)
    path.write_text("\n".join(blocks))
    return path


PRICING = '[models.pricing]\nprompt = "0.00000015"\ncompletion = "0.0000006"\n'


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


def rss_bytes(pid: int) -> int:
    """The process's resident memory, from /proc (0 where it cannot be read)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class Stack:
    def __init__(
        self,
        workdir: Path,
        *,
        appendfsync: str = "everysec",
        gateway_env: dict[str, str] | None = None,
        cluster: bool = False,
        limits: str | None = None,
    ) -> None:
        self.workdir = workdir
        self.admin_token = secrets.token_urlsafe(24)
        self.redis = RedisServer(workdir / "redis", port=free_port(), appendfsync=appendfsync)
        self.cluster = (
            LocalCluster(workdir / "cluster", appendfsync=appendfsync) if cluster else None
        )
        self.others: list[tuple[Child, str]] = []  # more gateways: (process, base URL)
        self.limits = LIMITS if limits is None else limits
        self.provider_url = f"http://127.0.0.1:{free_port()}"
        self.url = f"http://127.0.0.1:{free_port()}"
        self.gateway_env = gateway_env or {}
        self.provider: Child | None = None
        self.gateway: Child | None = None
        self._gateway_runs = 0

    @property
    def redis_url(self) -> str:
        return self.cluster.url if self.cluster is not None else self.redis.url

    def start(self) -> "Stack":
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.cluster is not None:
            self.cluster.start()
        else:
            self.redis.start()
        port = self.provider_url.rsplit(":", 1)[1]
        self.provider = python_child(
            "provider", ["-m", "bench.mock_provider", "--port", port], self.workdir, {}
        )
        self.provider.wait_http(self.provider_url + "/_sim/stats")
        self.start_gateway()
        return self

    def start_gateway(self) -> Child:
        """The gateway on its port; the first time, on another free one should something have
        taken it since it was chosen (a restart keeps its address: clients know it)."""
        self._gateway_runs += 1
        name = f"gateway-{self._gateway_runs}"
        if self._gateway_runs == 1:
            self.gateway, port = self._serve_on_a_free_port(name, "data", self.url)
            self.url = f"http://127.0.0.1:{port}"
        else:
            self.gateway = self._serve(name, int(self.url.rsplit(":", 1)[1]), "data")
        return self.gateway

    def add_gateway(self) -> str:
        """One more `gateway serve` on the same store, with its own port and data directory
        (another machine, as far as the gateway can tell); its base URL."""
        n = len(self.others) + 2
        child, port = self._serve_on_a_free_port(f"gateway-other-{n}", f"data-{n}")
        url = f"http://127.0.0.1:{port}"
        self.others.append((child, url))
        return url

    def _serve_on_a_free_port(
        self, name: str, data: str, url: str | None = None, attempts: int = 3
    ) -> tuple[Child, int]:
        """A port is free when chosen, not always when bound (the cluster's nodes and every
        outgoing connection take ports too): on "address already in use", another."""
        port = int(url.rsplit(":", 1)[1]) if url else free_port()
        for attempt in range(attempts):
            try:
                return self._serve(name, port, data), port
            except RuntimeError as exc:
                if "address already in use" not in str(exc) or attempt + 1 == attempts:
                    raise
                port = free_port()
        raise AssertionError("unreachable")

    def _serve(self, name: str, port: int, data: str) -> Child:
        toml = catalog_toml(self.workdir / "gateway.toml", self.provider_url)
        limits = self.workdir / "limits.toml"
        limits.write_text(self.limits)
        env = {
            "GATEWAY_REDIS_URL": self.redis_url,
            "GATEWAY_ADMIN_TOKEN": self.admin_token,
            "GATEWAY_DATA_DIR": str(self.workdir / data),
            "GATEWAY_LIMITS_FILE": str(limits),
            "GATEWAY_LOG_FORMAT": "json",
            "GATEWAY_JOURNAL_REPLAY_SECONDS": "0.2",
            **self.gateway_env,
        }
        child = python_child(
            name,
            ["-m", "gateway", "serve", "--config", str(toml), "--port", str(port)],
            self.workdir,
            env,
            cwd=self.workdir,
        )
        child.wait_http(f"http://127.0.0.1:{port}/readyz", timeout=60)
        return child

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
        names = [f"gateway-{run}" for run in range(1, self._gateway_runs + 1)]
        names += [f"gateway-other-{n}" for n in range(2, len(self.others) + 2)]
        for name in names:
            path = self.workdir / f"{name}.log"
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
        for child in (self.gateway, *(c for c, _ in self.others), self.provider):
            if child is not None:
                child.stop()
        if self.cluster is not None:
            self.cluster.stop()
        self.redis.stop()
