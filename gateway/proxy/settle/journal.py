"""The settlement journal: a settlement that cannot reach Redis is written here, fsync'd, and
replayed when Redis answers again; the settlement script is idempotent on the generation id, so a
replay never charges twice.

It also keeps releases: an admission whose reply never came (Redis timed out, or its connection
died, possibly after the script ran) was answered 503 and will never settle, so what it may hold
is given back by `Metering.release`, idempotent too (a tombstone makes a late admission of the
same id take nothing). A release that cannot reach Redis at once waits here, without an fsync:
should the machine crash before it is replayed, the reservation still expires by itself.

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
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import orjson
from aiohttp import web

from gateway.observability.metrics import JOURNALED
from gateway.tasks.background import stop_task
from metering.admission import Held, Metering
from metering.transport.client import STORE_ERRORS
from metering.usage import UsageRecord

Release = tuple[str, str, list[str]]  # (account id, generation id, its places in flight)

log = logging.getLogger("gateway.journal")
PREFIX = "settlements-"


class SettlementJournal:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / f"{PREFIX}{os.getpid()}.jsonl"

    def append(self, record: UsageRecord, now: float, held: Sequence[Held] = ()) -> None:
        """Durable before the caller answers: written and fsync'd. `held`: what the request
        holds of the rate limits, given back with the replay."""
        entry = {"record": record.to_json(), "now": now, "held": [list(h) for h in held]}
        self._write(orjson.dumps(entry) + b"\n", sync=True)
        log.warning(
            "settlement of %s journaled (redis unreachable): %d nanodollars", record.id, record.cost
        )

    def append_release(
        self, account_id: str, generation_id: str, in_flight: Sequence[str] = ()
    ) -> None:
        """A reservation (and its places in flight) to give back once Redis answers (written,
        not fsync'd: see above)."""
        release = {"account_id": account_id, "generation_id": generation_id}
        entry = {"release": {**release, "in_flight": list(in_flight)}}
        self._write(orjson.dumps(entry) + b"\n", sync=False)

    def _write(self, line: bytes, *, sync: bool) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        for _ in range(100):
            with self.path.open("ab") as journal:
                fcntl.flock(journal, fcntl.LOCK_EX)
                if not _is_at(journal, self.path):
                    continue  # rotated into a batch between the open and the lock: reopen
                journal.write(line)
                journal.flush()
                if sync:
                    os.fsync(journal.fileno())
                break

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
            fcntl.flock(journal, fcntl.LOCK_EX)
            if os.fstat(journal.fileno()).st_size == 0 or not _is_at(journal, self.path):
                return
            os.rename(self.path, self._new_batch())
            _sync_dir(self.directory)

    def _new_batch(self) -> Path:
        return self.directory / f"{PREFIX}batch-{os.getpid()}-{time.time_ns()}.jsonl"

    async def replay(self, metering: Metering, now: float | None = None) -> int:
        """Settle (and release) what the journals hold; what still fails stays for the next pass
        (which starts again at the first line not done: replaying a line twice is harmless).
        `now`: the time a release's tombstone counts from (the wall clock by default)."""
        self._rotate_own()
        applied = 0
        for path in self.files():
            if path != self.path:
                applied += await self._replay_file(path, metering, now)
        if applied:
            log.info("replayed %d journaled settlements", applied)
        return applied

    async def _replay_file(self, path: Path, metering: Metering, now: float | None) -> int:
        try:
            journal = path.open("rb")
        except FileNotFoundError:
            return 0  # another process replayed it meanwhile
        with journal:
            try:
                fcntl.flock(journal, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return 0  # another process is replaying it
            if not _is_at(journal, path):
                return 0  # replayed (removed or rewritten) while this process waited
            lines = [line for line in journal.read().splitlines() if line.strip()]
            applied = released = 0
            for n, line in enumerate(lines):
                entry = _decode(line)
                if entry is None:
                    self._set_aside(line)
                    continue
                try:
                    if isinstance(entry, Settlement):
                        done = await metering.settle(
                            entry.record, entry.now, replayed=True, held=entry.held
                        )
                        applied += int(done.applied)
                    else:
                        account_id, generation_id, in_flight = entry
                        moment = time.time() if now is None else now
                        held = await metering.release(account_id, generation_id, moment, in_flight)
                        released += held
                except STORE_ERRORS:
                    if n:
                        self._keep(path, lines[n:])
                    raise
            if released:
                log.info("gave back %d reservations whose admission reply was lost", released)
            path.unlink()
            _sync_dir(self.directory)
            return applied

    def _keep(self, path: Path, lines: list[bytes]) -> None:
        """What is left of a batch, written whole to a new file that then replaces it: a crash
        at any moment leaves either the old batch or the new one, never a part."""
        temporary = path.with_suffix(".tmp")
        with temporary.open("wb") as rest:
            rest.write(b"".join(line + b"\n" for line in lines))
            rest.flush()
            os.fsync(rest.fileno())
        os.replace(temporary, path)
        _sync_dir(self.directory)

    def _set_aside(self, line: bytes) -> None:
        """A line that cannot be read (a torn write) goes where an operator can look at it."""
        with (self.directory / "unreadable-settlements.jsonl").open("ab") as aside:
            aside.write(line + b"\n")
            aside.flush()
            os.fsync(aside.fileno())
        log.error("an unreadable journal line was set aside in unreadable-settlements.jsonl")

    def pending(self) -> int:
        total = 0
        for path in self.files():
            with contextlib.suppress(OSError):
                total += sum(1 for line in path.read_bytes().splitlines() if line.strip())
        return total


@dataclass(frozen=True, slots=True)
class Settlement:
    record: UsageRecord
    now: float
    held: list[Held]


def _decode(line: bytes) -> Settlement | Release | None:
    """A journal line (lines of earlier versions have no `held` or `in_flight`)."""
    try:
        entry = orjson.loads(line)
        if "release" in entry:
            release = entry["release"]
            in_flight = [str(key) for key in release.get("in_flight", [])]
            return str(release["account_id"]), str(release["generation_id"]), in_flight
        held = [(str(k), str(kind), int(n)) for k, kind, n in entry.get("held", [])]
        return Settlement(UsageRecord.from_json(entry["record"]), float(entry["now"]), held)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


def _is_at(journal: BinaryIO, path: Path) -> bool:
    """The open file is still the one at `path` (not renamed, replaced or removed since)."""
    try:
        return os.fstat(journal.fileno()).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def _sync_dir(directory: Path) -> None:
    """A rename or removal is durable once its directory is."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
    from gateway.state import CLOCK, SERVICES, SETTINGS

    journal = app[JOURNAL]
    interval = app[SETTINGS].journal_replay_seconds

    async def loop() -> None:
        while True:
            JOURNALED.set(journal.pending())
            if journal.files():
                try:
                    await journal.replay(app[SERVICES].metering, app[CLOCK].now())
                except STORE_ERRORS as exc:
                    log.warning("journal replay skipped: redis %s", type(exc).__name__)
                except Exception:
                    log.exception("journal replay failed; trying again in %s s", interval)
            await asyncio.sleep(interval)

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        await stop_task(task)
