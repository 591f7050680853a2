"""The catalog in force (models, their listed prices, their providers and keys), and its reload:
on SIGHUP and when the config file changes on disk, as the rate limits (gateway.limits).

A bad file is refused with one log line, and the catalog in force stays. A request holds the
model it was admitted with, so it is charged the price it was admitted at, whatever a reload
changes meanwhile; the next request meets the new one. Providers whose address or keys changed
get new connection pools, the old ones closing as their requests finish (Upstream.update).
"""

import logging
from pathlib import Path

from aiohttp import web

from config.errors import ConfigError
from config.settings import load_settings
from gateway.models import ResolvedModel, resolve_catalog
from gateway.proxy.forward.upstream import Upstream
from gateway.tasks.watched_file import WatchedFile

log = logging.getLogger("gateway.catalog")


class CatalogHolder(WatchedFile):
    def __init__(
        self, path: Path | None, models: dict[str, ResolvedModel], upstream: Upstream
    ) -> None:
        super().__init__(path)
        self.models = models  # the app's own dict, changed in place (it is read, never held)
        self.upstream = upstream

    def reload(self) -> bool:
        """Load the file again; keep the catalog in force when it is bad. True when replaced."""
        if self.path is None:
            return False
        self.read_now()
        try:
            settings = load_settings(self.path)
        except ConfigError as exc:
            problems = "; ".join(str(p) for p in exc.problems)
            log.error("catalog refused, the catalog in force stays: %s", problems)
            return False
        catalog = settings.catalog()
        models = resolve_catalog(catalog)
        self.upstream.update(catalog.providers)
        self.models.clear()  # no await between: no request sees it half made
        self.models.update(models)
        log.info(
            "catalog loaded from %s: %d models, %d providers",
            self.path,
            len(models),
            len(catalog.providers),
        )
        return True


CATALOG = web.AppKey("catalog", CatalogHolder)
