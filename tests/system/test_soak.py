"""`make soak` in small: 30 seconds of mixed load at 80% of the measured maximum (streaming and
not, free and paid, clients hanging up, purchases and refunds), then 500 requests racing on an
account that can afford 10; the books must add up, nothing overspent, memory flat after warm-up,
no error line in the gateway's log. `make soak` runs the same for 10 minutes and 10,000 racers,
with tighter bounds on load shedding and memory (see bench/soak.py's run_soak)."""

from pathlib import Path

import pytest

from bench.soak import run_soak
from gateway.runtime.redis_server import find_binaries

pytestmark = pytest.mark.skipif(not find_binaries(), reason="no redis-server or valkey-server")


async def test_thirty_seconds_of_mixed_load_keep_the_books_exact(tmp_path: Path) -> None:
    report = await run_soak(tmp_path, seconds=30, race=500, strict=False)
    assert report.problems == [], report
    assert report.statuses.get("200", 0) > report.requests // 2
    assert report.statuses.get("-1", 0) > 0  # clients did hang up
    assert report.purchases > 10 and report.refunds.get("200", 0) > 5
    assert 10 <= report.race_answered < 500
