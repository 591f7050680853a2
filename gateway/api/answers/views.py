"""JSON shapes of records as the APIs show them: USD as decimal strings (or numbers where the
OpenAI/OpenRouter shape has numbers), times in RFC 3339 UTC."""

from gateway.api.answers import shapes
from gateway.api.answers.limit_shapes import RateLimitState
from metering.accounts import Account, ApiKey, Purchase
from metering.ledger import LedgerEntry
from metering.money import format_usd, nanos_to_number
from metering.periods import rfc3339
from metering.usage import UsageRecord


def account_view(
    account: Account, tier_threshold: int, auto_topup: tuple[int, int, bool] | None = None
) -> shapes.Account:
    return shapes.Account(
        id=account.id,
        name=account.name,
        balance=format_usd(account.balance),
        reserved=format_usd(account.reserved),
        available=format_usd(account.balance - account.reserved),
        lifetime_purchases=format_usd(account.purchased),
        granted=format_usd(account.granted),
        total_usage=format_usd(account.usage),
        refunded=format_usd(account.refunded),
        expired=format_usd(account.expired),
        tier="plus" if account.purchased >= tier_threshold else "basic",
        auto_topup=None
        if auto_topup is None
        else shapes.AutoTopup(
            threshold=format_usd(auto_topup[0]),
            amount=format_usd(auto_topup[1]),
            request_outstanding=auto_topup[2],
        ),
        created_at=account.created_at,
    )


def key_admin_view(key: ApiKey) -> shapes.Key:
    return shapes.Key(
        hash=key.hash,
        account_id=key.account_id,
        name=key.name,
        disabled=key.disabled,
        management=key.management,
        limit=None if key.limit is None else format_usd(key.limit),
        limit_reset=key.limit_reset,
        usage=format_usd(key.usage),
        created_at=key.created_at,
        expires_at=None if key.expires_at_ms is None else rfc3339(key.expires_at_ms / 1000),
    )


def key_holder_view(
    key: ApiKey,
    account: Account,
    free_daily: shapes.FreeModelDailyRequests | None = None,
    rate_limits: list[RateLimitState] | None = None,
) -> shapes.KeyHolder:
    remaining = (
        None if key.limit is None else nanos_to_number(max(key.limit - _period_usage(key), 0))
    )
    return shapes.KeyHolder(
        label=key.name,
        usage=nanos_to_number(key.usage),
        usage_daily=nanos_to_number(key.usage_daily),
        usage_weekly=nanos_to_number(key.usage_weekly),
        usage_monthly=nanos_to_number(key.usage_monthly),
        limit=None if key.limit is None else nanos_to_number(key.limit),
        limit_reset=key.limit_reset,
        limit_remaining=remaining,
        is_free_tier=account.purchased == 0,
        is_management_key=key.management,
        free_model_daily_requests=free_daily,
        **({} if rate_limits is None else {"rate_limits": rate_limits}),
    )


def _period_usage(key: ApiKey) -> int:
    return {"daily": key.usage_daily, "weekly": key.usage_weekly, "monthly": key.usage_monthly}.get(
        key.limit_reset or "", key.usage
    )


def ledger_entry_view(entry: LedgerEntry) -> shapes.LedgerEntry:
    return shapes.LedgerEntry(
        id=entry.id,
        kind=entry.kind,  # type: ignore[arg-type]
        amount=format_usd(entry.amount),
        created_at=rfc3339(entry.created_at_ms / 1000),
        ref=entry.ref,
        **({} if entry.note is None else {"note": entry.note}),
    )


def purchase_view(purchase: Purchase) -> shapes.Purchase:
    return shapes.Purchase(
        id=purchase.id,
        account_id=purchase.account_id,
        amount=format_usd(purchase.amount),
        fee=format_usd(purchase.fee),
        total_charged=format_usd(purchase.amount + purchase.fee),
        method=purchase.method,  # type: ignore[arg-type]
        idempotency_key=purchase.idempotency_key,
        created_at=purchase.created_at,
        **({"checkout_id": purchase.checkout_id} if purchase.checkout_id else {}),
        source=purchase.source,
    )


def generation_view(record: UsageRecord) -> shapes.Generation:
    return shapes.Generation(
        id=record.id,
        model=record.model,
        provider_name=record.provider_name,
        api_key_hash=record.key_hash,
        tokens_prompt=record.tokens_prompt,
        tokens_completion=record.tokens_completion,
        native_tokens_cached=record.native_tokens_cached,
        native_tokens_reasoning=record.native_tokens_reasoning,
        num_media_prompt=record.num_media_prompt,
        total_cost=nanos_to_number(record.cost),
        total_cost_usd=format_usd(record.cost),
        latency=record.latency_ms,
        generation_time=record.generation_time_ms,
        streamed=record.streamed,
        cancelled=record.cancelled,
        finish_reason=record.finish_reason,
        status=record.status,
        usage_source=record.usage_source,  # type: ignore[arg-type]
        zero_completion_insurance=record.zero_completion_insurance,
        failed_attempts=[shapes.FailedAttempt(**a) for a in record.failed_attempts],
        created_at=record.created_at,
        native_tokens_prompt=record.tokens_prompt,
        native_tokens_completion=record.tokens_completion,
        native_finish_reason=record.native_finish_reason or record.finish_reason,
        cache_discount=None
        if record.cache_discount is None
        else nanos_to_number(record.cache_discount),
        upstream_id=record.upstream_id,
        external_user=record.external_user,
        origin=record.origin or "",
        usage=nanos_to_number(record.cost),
        is_byok=False,
        router=None,
        app_id=None,
        moderation_latency=None,
    )


def duration_text(seconds: float) -> str:
    """A rule's time span as people write it: "24 hours", "90 minutes", "7.2 seconds"."""
    seconds = round(seconds, 6)
    for unit, size in (("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            return f"{count} {unit}{'' if count == 1 else 's'}"
    if seconds >= 3600:
        return f"{seconds / 3600:g} hours"
    if seconds >= 60:
        return f"{seconds / 60:g} minutes"
    return f"{seconds:g} second{'' if seconds == 1 else 's'}"
