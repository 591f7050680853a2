"""The settlement journal: a settlement that cannot reach Redis is written here, fsync'd, and
replayed when Redis answers again; the settlement script is idempotent on the generation id, so a
replay never charges twice.

One file per process (`settlements-<pid>.jsonl` in the data directory) that only its process
appends to. To replay its own file, a process first renames it to a batch
(`settlements-batch-<pid>-<ns>.jsonl`), so that no append ever waits on a replay that is waiting
on Redis: an append is synchronous, and waiting there would stop the event loop the replay needs.
Batches, and the files of processes that are gone (a gateway killed mid-load), are replayed by
whichever process locks them first, so two processes never replay one file at the same time.
"""

import asyncio
import contextlib
import fcntl
import logging
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
from aiohttp import web
from redis.exceptions import RedisError

from gateway.background import stop_task
from gateway.metrics import JOURNALED
from metering.admission import Metering
from metering.usage import UsageRecord

log = logging.getLogger("gateway.journal")
PREFIX = "settlements-"


class SettlementJournal:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / f"{PREFIX}{os.getpid()}.jsonl"

    def append(self, record: UsageRecord, now: float) -> None:
        """Durable before the caller answers: written and fsync'd."""
        self.directory.mkdir(parents=True, exist_ok=True)
        line = orjson.dumps({"record": record.to_json(), "now": now}) + b"\n"
        with self.path.open("ab") as journal:
            fcntl.flock(journal, fcntl.LOCK_EX)
            journal.write(line)
            journal.flush()
            os.fsync(journal.fileno())
        log.warning(
            "settlement of %s journaled (redis unreachable): %d nanodollars", record.id, record.cost
        )

    def files(self) -> list[Path]:
        """This process's journal, batches, and the journals of processes that are gone."""
        if not self.directory.is_dir():
            return []
        out = []
        for path in sorted(self.directory.glob(f"{PREFIX}*.jsonl")):
            pid = path.stem.removeprefix(PREFIX)
            if path == self.path or not pid.isdigit() or not _alive(int(pid)):
                out.append(path)
        return out

    def _rotate_own(self) -> None:
        """Move what this process journaled so far into a batch; appends start a new file."""
        try:
            journal = self.path.open("r+b")
        except FileNotFoundError:
            return
        with journal:
            fcntl.flock(journal, fcntl.LOCK_EX)  # an append in another thread or a replay elsewhere
            if os.fstat(journal.fileno()).st_size == 0:
                return
            batch = self.directory / f"{PREFIX}batch-{os.getpid()}-{time.time_ns()}.jsonl"
            os.rename(self.path, batch)

    async def replay(self, metering: Metering) -> int:
        """Settle what the journals hold; what still fails stays for the next pass."""
        self._rotate_own()
        applied = 0
        for path in self.files():
            if path == self.path:
                continue
            with path.open("r+b") as journal:
                try:
                    fcntl.flock(journal, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue
                lines = [line for line in journal.read().splitlines() if line.strip()]
                left: list[bytes] = []
                for line in lines:
                    entry = orjson.loads(line)
                    try:
                        result = await metering.settle(
                            UsageRecord.from_json(entry["record"]), float(entry["now"])
                        )
                        applied += int(result.applied)
                    except RedisError:
                        left.append(line)
                if lines and len(left) == len(lines):
                    continue  # nothing settled: leave the file as it is
                journal.seek(0)
                journal.truncate()  # a process that opened it before the unlink reads nothing
                journal.write(b"".join(line + b"\n" for line in left))
                journal.flush()
                os.fsync(journal.fileno())
                if not left:
                    with contextlib.suppress(OSError):
                        path.unlink()
        if applied:
            log.info("replayed %d journaled settlements", applied)
        return applied

    def pending(self) -> int:
        total = 0
        for path in self.files():
            with contextlib.suppress(OSError):
                total += sum(1 for line in path.read_bytes().splitlines() if line.strip())
        return total


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


JOURNAL = web.AppKey("journal", SettlementJournal)


async def journal_replayer(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: replay at start and then every few seconds while anything is journaled."""
    from gateway.state import SERVICES, SETTINGS

    journal = app[JOURNAL]
    interval = app[SETTINGS].journal_replay_seconds

    async def loop() -> None:
        while True:
            JOURNALED.set(journal.pending())
            if journal.files():
                try:
                    await journal.replay(app[SERVICES].metering)
                except RedisError as exc:
                    log.warning("journal replay skipped: redis %s", type(exc).__name__)
            await asyncio.sleep(interval)

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        await stop_task(task)
