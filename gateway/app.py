"""The aiohttp application factory: routes, middlewares, and every resource in a cleanup context."""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from config.settings import Settings
from gateway.api import activity, admin, admin_credits, consumer, keys, pages, webhooks
from gateway.api.openapi.document import DOCUMENT, Document, openapi_endpoint
from gateway.billing import checkout, credits_api, refund_button
from gateway.catalog import CATALOG, CatalogHolder
from gateway.clock import Clock
from gateway.http.auth import KeyCache
from gateway.http.errors import error_middleware
from gateway.http.key_guessing import KEY_GUESSING, KeyGuessing
from gateway.limits import LIMITS, LimitsHolder
from gateway.middleware import gateway_middleware
from gateway.models import resolve_catalog
from gateway.observability.health import healthz, readyz
from gateway.observability.metrics import SWITCH, metrics_endpoint
from gateway.proxy.apis import chat, embeddings, messages, responses
from gateway.proxy.forward.upstream import Upstream
from gateway.proxy.settle.journal import JOURNAL, SettlementJournal, journal_replayer
from gateway.proxy.settle.settling import SETTLING, Settling
from gateway.redis_clients import open_clients
from gateway.state import CLOCK, MODELS, SERVICES, SERVING, SETTINGS, Services, Serving
from gateway.tasks.expiry import expiry_sweeper
from gateway.tasks.leases import lease_keeper
from gateway.tasks.memory import memory_trimmer
from gateway.tasks.outbox_delivery import outbox_worker
from gateway.tasks.reloads import file_reloader
from gateway.tasks.rollups import rollup_folder
from metering.accounts import AccountStore
from metering.admission import Metering
from metering.generations import Generations
from metering.ledger import Ledger
from metering.payments.checkouts import Checkouts
from metering.payments.outbox import Outbox
from metering.rollup_fold import RollupFold
from metering.rollups import Rollups
from metering.scripts import Scripts
from metering.transport.client import AnyRedis
from ratelimit.store import RateLimitStore, admission_prelude

log = logging.getLogger("gateway")
SECONDS_PER_DAY = 86_400


def create_app(settings: Settings, *, clock: Clock | None = None) -> web.Application:
    if not settings.redis_url:
        raise ValueError("create_app needs settings.redis_url (serve starts the embedded Redis)")
    app = web.Application(
        middlewares=[gateway_middleware],
        client_max_size=settings.max_body_bytes,
    )
    app[SETTINGS] = settings
    app[CLOCK] = clock or Clock()
    SWITCH.on = settings.metrics_enabled
    app[MODELS] = resolve_catalog(settings.catalog())
    app[LIMITS] = LimitsHolder(settings.limits_file)
    app[JOURNAL] = SettlementJournal(settings.data_dir.resolve())
    app[KEY_GUESSING] = KeyGuessing()
    app[SETTLING] = Settling()
    app[SERVING] = Serving()
    app[DOCUMENT] = Document()
    app.cleanup_ctx.append(_services)
    app.cleanup_ctx.append(file_reloader)
    app.cleanup_ctx.append(expiry_sweeper)
    app.cleanup_ctx.append(rollup_folder)
    app.cleanup_ctx.append(lease_keeper)
    app.cleanup_ctx.append(outbox_worker)
    app.cleanup_ctx.append(journal_replayer)
    app.cleanup_ctx.append(memory_trimmer)
    app.add_routes(chat.routes)
    app.add_routes(embeddings.routes)
    app.add_routes(responses.routes)
    app.add_routes(messages.routes)
    app.add_routes(consumer.routes)
    app.add_routes(admin.routes)
    app.add_routes(admin_credits.routes)
    app.add_routes(webhooks.routes)
    app.add_routes(keys.routes)
    app.add_routes(pages.routes)
    app.add_routes(credits_api.routes)
    app.add_routes(checkout.routes)
    app.add_routes(refund_button.routes)
    app.add_routes(activity.routes)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/openapi.json", openapi_endpoint)
    if settings.metrics_port is None:
        app.router.add_get("/metrics", metrics_endpoint)
    return app


def create_metrics_app(settings: Settings) -> web.Application:
    """/metrics alone, for `metrics_port`."""
    app = web.Application(middlewares=[error_middleware])
    app[SETTINGS] = settings
    app.router.add_get("/metrics", metrics_endpoint)
    return app


def _rollup_fold(settings: Settings, redis: AnyRedis) -> RollupFold:
    """Minute buckets are kept 7 days, hour buckets 90 at most, day and month `rollup_days`."""
    days = (7, min(90, settings.rollup_days), settings.rollup_days, settings.rollup_days)
    return RollupFold(Scripts(redis), retention_seconds=tuple(d * SECONDS_PER_DAY for d in days))


async def _services(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    assert settings.redis_url is not None
    clients = await open_clients(
        settings.redis_url,
        timeout=settings.redis_timeout_seconds,
        alone=app[SERVING].alone,
        replica_wait_ms=settings.redis_replica_wait_ms,
    )
    redis, hot, batcher = clients.redis, clients.hot, clients.batcher
    accounts = AccountStore(redis, Scripts(redis))
    upstream = Upstream(
        settings.catalog().providers,
        connect_timeout=settings.upstream_connect_timeout,
        read_timeout=settings.upstream_read_timeout,
        total_timeout=settings.upstream_total_timeout,
        other_secrets=settings.own_secrets(),
        cooldown_seconds=settings.provider_cooldown_seconds,
    )
    await upstream.start()
    app[CATALOG] = CatalogHolder(settings.config, app[MODELS], upstream)
    fold = _rollup_fold(settings, redis)
    app[SERVICES] = Services(
        redis=redis,
        clients=clients,
        accounts=accounts,
        metering=Metering(
            hot,
            Scripts(hot, admission_prelude=admission_prelude()),
            reservation_timeout=settings.reservation_timeout_seconds,
            record_ttl_seconds=settings.usage_record_days * SECONDS_PER_DAY,
            timeout=settings.redis_timeout_seconds,
            admission_timeout=settings.admission_timeout_seconds,
            batcher=batcher,
            topup_pending_seconds=settings.topup_pending_hours * 3600,
            fold=fold,
            lease_above_per_second=settings.lease_above_requests_per_second,
            lease_seconds=settings.lease_seconds,
        ),
        upstream=upstream,
        keys=KeyCache(accounts, settings.key_cache_seconds),
        limits=RateLimitStore(redis),
        ledger=Ledger(redis, Scripts(redis)),
        outbox=Outbox(redis),
        rollups=Rollups(redis, fold),
        rollup_fold=fold,
        generations=Generations(redis),
        checkouts=Checkouts(redis),
    )
    try:
        yield
    finally:
        await _close_services(app)


async def _close_services(app: web.Application) -> None:
    """Settlements still out first, then what they leave: leases, the rollups, the clients."""
    settings, services = app[SETTINGS], app[SERVICES]
    await app[SETTLING].drain(2 * settings.redis_timeout_seconds + 1)
    with contextlib.suppress(TimeoutError):  # else they expire as reservations do
        async with asyncio.timeout(settings.redis_timeout_seconds):
            await services.metering.leases.close(app[CLOCK].now())
    with contextlib.suppress(TimeoutError):  # else the next read or settlement folds them
        async with asyncio.timeout(settings.redis_timeout_seconds):
            await services.rollup_fold.fold_marked()
    await services.metering.aclose(settings.redis_timeout_seconds)
    await services.upstream.close()
    await services.clients.aclose()
