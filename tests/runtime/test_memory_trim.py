"""Memory given back after a burst (gateway/tasks/memory.py): only after a busy spell and a quiet
moment, once a burst, and what the process freed really leaves its resident memory."""

import resource
import sys
from pathlib import Path

import pytest

from gateway.tasks import memory
from gateway.tasks.memory import BUSY_REQUESTS, IDLE_SECONDS, AfterBursts


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_it_trims_once_after_a_burst_and_a_quiet_moment() -> None:
    under_way = [0]
    after = AfterBursts(lambda: under_way[0])
    assert not any(after.look(1.0) for _ in range(20))  # never busy: nothing to give back
    under_way[0] = BUSY_REQUESTS - 1
    after.look(1.0)
    under_way[0] = 0
    assert not any(after.look(1.0) for _ in range(20))  # a small spell is no burst
    under_way[0] = BUSY_REQUESTS
    after.look(1.0)
    under_way[0] = 0
    looks = [after.look(1.0) for _ in range(int(IDLE_SECONDS) + 5)]
    assert looks.count(True) == 1 and looks.index(True) == int(IDLE_SECONDS) - 1
    under_way[0] = BUSY_REQUESTS * 3
    after.look(1.0)
    under_way[0] = 1  # still a request under way: not quiet
    assert not any(after.look(1.0) for _ in range(20))
    assert after.trims == 1


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or memory._malloc_trim() is None,
    reason="needs glibc's malloc_trim",
)
def test_what_was_freed_leaves_the_resident_memory() -> None:
    # 80 MB of 2 KB blocks from glibc's heap, one in 64 kept: freed memory in the middle of the
    # heap, which glibc keeps for reuse until trimmed.
    blocks = [bytearray(2048) for _ in range(40_000)]
    kept = blocks[::64]
    del blocks
    before = _rss_mb()
    under_way = [BUSY_REQUESTS]
    after = AfterBursts(lambda: under_way[0])
    after.look(1.0)
    under_way[0] = 0
    assert any(after.look(1.0) for _ in range(int(IDLE_SECONDS) + 1))
    assert _rss_mb() < before - 20, (before, _rss_mb())
    assert len(kept) == 625
