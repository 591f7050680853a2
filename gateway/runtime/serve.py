"""`gateway serve`: the embedded Redis when no URL is set, then one or more worker processes."""

import asyncio
import gc
import logging
import multiprocessing
import os
import shutil
import signal
import sys

from config.environment import stray_variables
from config.settings import Settings
from gateway.app import create_app, create_metrics_app
from gateway.observability.logs import configure as configure_logging
from gateway.runtime.file_limits import describe_open_file_limit, raise_open_file_limit
from gateway.runtime.redis_server import (
    RedisBinaryMissing,
    RedisServer,
    RedisStartFailed,
    die_with_parent,
)
from gateway.runtime.server import install_uvloop, serve_until_stopped

log = logging.getLogger("gateway")


def run_serve(settings: Settings) -> int:
    configure_logging(settings.log_level, settings.log_format)
    for stray in stray_variables(os.environ, Settings.model_fields):
        log.warning("%s", stray.describe())
    describe_open_file_limit(raise_open_file_limit())  # the workers inherit it
    embedded: RedisServer | None = None
    if not settings.redis_url:
        try:
            embedded = RedisServer(
                settings.data_dir.resolve(), appendfsync=settings.redis_appendfsync
            ).start()
        except (RedisBinaryMissing, RedisStartFailed) as exc:
            print(f"gateway: {exc}", file=sys.stderr)
            return 1
        log.info("embedded Redis (%s) on %s, AOF on", embedded.command()[0], embedded.socket_path)
        settings = settings.model_copy(update={"redis_url": embedded.url})
    if not settings.admin_enabled:
        log.warning("admin API is off: set GATEWAY_ADMIN_TOKEN to turn it on")
    log.info("catalog: %d models from %d providers", len(settings.models), len(settings.providers))
    try:
        if settings.workers == 1:
            _run_worker(settings, reuse_port=False)
        else:
            _run_workers(settings)
    finally:
        if embedded is not None:
            embedded.stop()
    return 0


def _run_worker(settings: Settings, *, reuse_port: bool) -> None:
    """Takes the settings object itself: validating a dict again would let GATEWAY_* variables
    outrank the command line's flags."""
    if reuse_port:  # a spawned worker: log like the parent, and never outlive it
        die_with_parent()
    configure_logging(settings.log_level, settings.log_format)
    install_uvloop()

    async def announce(port: int) -> None:
        log.info("gateway listening on http://%s:%d", settings.host, port)

    app = create_app(settings)
    tune_garbage_collector()
    side = (
        None
        if settings.metrics_port is None
        else (create_metrics_app(settings), settings.metrics_port)
    )
    asyncio.run(
        serve_until_stopped(
            app,
            settings.host,
            settings.port,
            reuse_port=reuse_port,
            on_ready=announce,
            side_app=side,
        )
    )


def tune_garbage_collector() -> None:
    """What was built at start-up (modules, the app, the catalog) is never garbage: frozen, the
    collector stops walking it on every pass. A request allocates a few hundred objects that
    mostly die young; with the default threshold (700) a young-generation pass ran about every
    other request."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 20)


GC_YOUNG_THRESHOLD = 20_000


def _run_workers(settings: Settings) -> None:
    """N processes on one port (SO_REUSEPORT); the kernel spreads connections between them.
    Their metrics go to files in one fresh directory, which /metrics adds up in any worker."""
    metrics_dir = settings.data_dir.resolve() / "metrics"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)  # read by each spawned worker
    ctx = multiprocessing.get_context("spawn")
    workers = [
        ctx.Process(target=_run_worker, args=(settings,), kwargs={"reuse_port": True}, daemon=True)
        for _ in range(settings.workers)
    ]
    for w in workers:
        w.start()

    def stop(signum: int, _frame: object) -> None:
        for w in workers:
            if w.is_alive() and w.pid:
                w.terminate()

    def reload(signum: int, _frame: object) -> None:
        for w in workers:
            if w.is_alive() and w.pid:
                os.kill(w.pid, signal.SIGHUP)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, reload)
    for w in workers:
        w.join()
