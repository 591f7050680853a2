"""`python -m bench.compare` (two versions of the gateway side by side, by CPU time per request):
it runs end to end, and the same code on both sides reads as the same."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.runtime.redis_server import find_binaries

ROOT = Path(__file__).resolve().parent.parent.parent
pytestmark = pytest.mark.skipif(not find_binaries(), reason="no redis-server or valkey-server")


def test_the_same_code_on_both_sides_compares_as_equal() -> None:
    args = [sys.executable, "-m", "bench.compare", str(ROOT), "--rounds", "2", "--seconds", "1"]
    args += ["--latency", "25", "--load-tool", "python", "--connections", "4"]
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(re.findall(r"^round \d: base \d+ µs/request", done.stdout, re.M)) == 2
    median = re.search(r"changed/base: median ([0-9.]+)", done.stdout)
    assert median is not None, done.stdout
    assert 0.5 < float(median.group(1)) < 2.0  # the same code: far from any real difference
    assert re.search(r"unloaded p50: base [0-9.]+ ms, changed [0-9.]+ ms", done.stdout)
