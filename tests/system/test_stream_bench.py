"""`python -m bench.open_streams` (make bench's stream-relay run): it runs end to end on a few
streams and reports, for the gateway and the bare proxy, the events each relayed, its CPU a
relayed event, memory a stream, and the ratio of the two."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.runtime.redis_server import find_binaries

ROOT = Path(__file__).resolve().parent.parent.parent
pytestmark = pytest.mark.skipif(not find_binaries(), reason="no redis-server or valkey-server")


def test_the_stream_relay_run_reports_both_proxies() -> None:
    args = [sys.executable, "-m", "bench.open_streams", "--streams", "20", "--rate", "10"]
    args += ["--hold", "2", "--settle", "1", "--bursts", "2"]
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = re.findall(
        r"^  (bare|gateway) +20 open in [0-9.]+ s: RSS .* KB a stream\) .* ([0-9.]+) µs of CPU a "
        r"relayed event while held \(([0-9]+) events/s\)",
        done.stdout,
        re.M,
    )
    assert [name for name, _, _ in rows] == ["bare", "bare", "gateway", "gateway"], done.stdout
    for _, _, rate in rows:
        assert 100 < int(rate) <= 220  # 20 streams, ten events a second each
    assert re.search(r"CPU a relayed event, medians: gateway [0-9.]+ µs", done.stdout)
