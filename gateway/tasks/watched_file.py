"""A file the gateway reads again when it changes on disk (gateway.tasks.reloads)."""

from pathlib import Path


class WatchedFile:
    """Its path (None: nothing to watch) and the modification time it was last read at."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._mtime = self._stat()

    def _stat(self) -> float | None:
        if self.path is None:
            return None
        try:
            return self.path.stat().st_mtime_ns / 1e9
        except OSError:
            return None

    def read_now(self) -> None:
        """Note that the file is being read as it is now."""
        self._mtime = self._stat()

    def changed_on_disk(self) -> bool:
        return self.path is not None and self._stat() != self._mtime
