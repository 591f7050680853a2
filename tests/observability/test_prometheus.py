"""A real Prometheus (Debian's package) scrapes a gateway running 2 workers: it reads exactly the
requests sent, and a latency quantile, through its HTTP API."""

import json
import os
import shutil
import signal
import subprocess
import textwrap
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from gateway.runtime.redis_server import free_port
from tests.processes import answers, gateway_process, http_json, paid_model_config, stop, wait_until
from tests.support import ThreadedServer

PROMETHEUS = shutil.which("prometheus")
_missing = None if PROMETHEUS else "Prometheus is not installed (make test installs it)"
if _missing and os.environ.get("CI"):
    pytest.fail(f"Prometheus tests cannot run under CI: {_missing}", pytrace=False)
pytestmark = pytest.mark.skipif(_missing is not None, reason=_missing or "")
N = 25


def _query(base: str, expr: str) -> list[Any]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as resp:
        result: list[Any] = json.loads(resp.read())["data"]["result"]
        return result


def test_prometheus_reads_the_sum_over_workers(tmp_path: Path, provider: ThreadedServer) -> None:
    assert PROMETHEUS is not None
    port, prom_port = free_port(), free_port()
    config = paid_model_config(tmp_path, provider.url)
    gateway = gateway_process(
        ["serve", "--config", str(config), "--port", str(port), "--workers", "2"],
        {"GATEWAY_DATA_DIR": str(tmp_path / "data"), "GATEWAY_ADMIN_TOKEN": "t0ken"},
    )
    prom_config = tmp_path / "prometheus.yml"
    prom_config.write_text(
        textwrap.dedent(f"""
        global:
          scrape_interval: 1s
        scrape_configs:
          - job_name: gateway
            static_configs:
              - targets: ["127.0.0.1:{port}"]
        """)
    )
    prom = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={prom_config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base, prom_base = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{prom_port}"
    try:
        assert wait_until(lambda: answers(base + "/readyz"), 30)
        admin = {"Authorization": "Bearer t0ken", "Content-Type": "application/json"}
        _, account = http_json(base + "/admin/v1/accounts", b'{"grant": "1.00"}', admin)
        _, key = http_json(f"{base}/admin/v1/accounts/{account['id']}/keys", b"{}", admin)
        body = json.dumps(
            {"model": "test/paid", "messages": [{"role": "user", "content": "hi"}]}
        ).encode()
        headers = {"Authorization": f"Bearer {key['key']}", "Content-Type": "application/json"}
        for _ in range(N):
            assert http_json(base + "/api/v1/chat/completions", body, headers)[0] == 200

        def counted() -> bool:
            try:
                result = _query(prom_base, "sum(gateway_requests_total)")
            except OSError:
                return False
            return bool(result) and float(result[0]["value"][1]) == N

        assert wait_until(counted, 40), "Prometheus never read the requests sent"
        median = "histogram_quantile(0.5, sum by (le) (gateway_request_duration_seconds_bucket))"
        assert wait_until(lambda: bool(_query(prom_base, median)), 10)
        assert 0 < float(_query(prom_base, median)[0]["value"][1]) < 5
    finally:
        prom.send_signal(signal.SIGTERM)
        prom.wait(10)
        stop(gateway)
