"""The answers of the JSON APIs as typed models: the views build them
(gateway.api.answers.views), and the OpenAPI document takes their schemas from them
(gateway.api.openapi.schemas), so a field is written once. Fields are declared in the order
the answers list them.

USD is an exact decimal string (numbers only where the OpenAI/OpenRouter shape has numbers);
times are RFC 3339 UTC.
"""

from typing import Annotated, Literal

from pydantic import Field

from gateway.api.answers.limit_shapes import RateLimitState
from gateway.api.answers.shapes_base import Count, LimitReset, Price, Shape, Time, Usd


class AutoTopup(Shape):
    threshold: Usd
    amount: Usd
    request_outstanding: bool


class Account(Shape):
    id: str
    name: str
    balance: Usd
    reserved: Usd
    available: Usd
    lifetime_purchases: Usd
    granted: Usd
    total_usage: Usd
    refunded: Usd
    expired: Usd
    tier: Literal["basic", "plus"]
    auto_topup: AutoTopup | None
    created_at: Time


class Key(Shape):
    """An API key as its account's managers see it (never its secret)."""

    hash: str = Field(description="sha256 of the secret, hex")
    account_id: str
    name: str
    disabled: bool
    management: bool
    limit: Usd | None
    limit_reset: LimitReset
    usage: Usd
    created_at: Time
    expires_at: Time | None


class FreeModelDailyRequests(Shape):
    limit: int | None
    remaining: int | None
    used: Count


class KeyHolder(Shape):
    """`GET /api/v1/key`: the key as its holder sees it (USD as numbers, as OpenRouter has it)."""

    label: str
    usage: float
    usage_daily: float
    usage_weekly: float
    usage_monthly: float
    limit: float | None
    limit_reset: LimitReset
    limit_remaining: float | None
    is_free_tier: bool
    is_management_key: bool
    free_model_daily_requests: FreeModelDailyRequests | None
    rate_limits: list[RateLimitState] = Field(
        default_factory=list, description="every rate limit that counts this key's requests"
    )


class FailedAttempt(Shape):
    model: str
    provider: str
    status: int | Literal["connect", "timeout", "protocol"] = Field(
        description="the provider's HTTP status, or why it gave no answer"
    )


class Generation(Shape):
    """One usage record, with OpenRouter's field names."""

    id: str
    model: str
    provider_name: str
    api_key_hash: str
    tokens_prompt: Count
    tokens_completion: Count
    native_tokens_cached: Count
    native_tokens_reasoning: Count
    num_media_prompt: Count
    total_cost: float = Field(description="USD charged")
    total_cost_usd: Usd
    latency: int = Field(description="ms from the request to the first byte")
    generation_time: int = Field(description="ms from the first to the last byte")
    streamed: bool
    cancelled: bool
    finish_reason: str | None
    status: int
    usage_source: Literal["provider", "provider_share", "estimated", "none"]
    zero_completion_insurance: bool = Field(
        description="not charged: no completion tokens and no finish reason, or an error finish"
    )
    failed_attempts: list[FailedAttempt] = Field(
        description="the tries that gave way before the one that served, in order"
    )
    created_at: Time
    # OpenRouter's other fields, with its names and types.
    native_tokens_prompt: Count = Field(description="the same count as tokens_prompt")
    native_tokens_completion: Count = Field(description="the same count as tokens_completion")
    native_finish_reason: str | None = Field(description="the same as finish_reason")
    cache_discount: float | None = Field(
        description="USD the provider's cache took off the listed cost (negative when cache "
        "writes cost more); null when no prompt token was read from or written to a cache"
    )
    upstream_id: str | None = Field(description="the provider's own id of its answer")
    external_user: str | None = Field(description="the request's `user`")
    origin: str = Field(description="the request's HTTP-Referer header; empty without one")
    usage: float = Field(description="USD charged, as total_cost")
    is_byok: bool = Field(description="always false: the gateway calls with its own keys")
    router: str | None = Field(description="always null: no router picks the model here")
    app_id: int | None = Field(description="always null: no app registry here")
    moderation_latency: int | None = Field(description="always null: nothing is moderated")


class Purchase(Shape):
    id: str
    account_id: str
    amount: Usd
    fee: Usd
    total_charged: Usd
    method: Literal["card", "alipay", "crypto"]
    idempotency_key: str
    created_at: Time
    checkout_id: str | None = Field(default=None, description="the checkout it paid, if any")
    source: Literal["operator", "payment_side"] = Field(
        description="who credited it: the admin API, or a payment webhook (only those can be "
        "refunded with the Refund button: the payment side returns their money)"
    )


class LedgerEntry(Shape):
    id: str
    kind: Literal["grant", "purchase", "refund", "expiry", "usage"]
    amount: Usd = Field(description="signed: credit positive, debit negative")
    created_at: Time
    ref: str
    note: str | None = Field(
        default=None, description="only where there is something to say: a payment that came late"
    )


class ModelPricing(Shape):
    """USD per token (per request for `request`, per input image for `image`), decimal strings,
    every field present as OpenRouter lists them. A cached or cache-written prompt token the
    catalog lists no price for is charged the prompt price, and that is what its field says;
    `internal_reasoning` "0" is no price of its own (reasoning tokens are completion tokens,
    charged the completion price); no web search is offered here ("0")."""

    prompt: Price
    completion: Price
    request: Price
    image: Price
    web_search: Price
    internal_reasoning: Price
    input_cache_read: Price
    input_cache_write: Price


class Architecture(Shape):
    """What the model reads and writes, as OpenRouter's models list has it."""

    modality: str = Field(description="inputs->outputs", examples=["text->text"])
    input_modalities: list[str]
    output_modalities: list[str]
    tokenizer: str
    instruct_type: str | None


class TopProvider(Shape):
    context_length: int | None
    max_completion_tokens: Count
    is_moderated: bool = Field(description="always false: the gateway moderates nothing")


class Model(Shape):
    """A catalog entry, as `GET /api/v1/models` lists it: OpenAI's fields, OpenRouter's, ours."""

    id: str
    name: str
    object: Literal["model"]
    owned_by: str
    providers: list[str]
    context_length: int | None
    pricing: ModelPricing
    top_provider: TopProvider
    is_free: bool
    canonical_slug: str
    created: int = Field(description="unix seconds the model was added; 0 when not said")
    description: str
    architecture: Architecture
    supported_parameters: list[str]
    per_request_limits: None


class Totals(Shape):
    """Activity over a span: spend in USD, tokens and requests."""

    spend: Usd
    prompt_tokens: Count
    completion_tokens: Count
    reasoning_tokens: Count
    requests: Count


class Bucket(Shape):
    """One time bucket of Activity; with `group_by`, one row per value of that field."""

    start: Time
    model: str | None = None
    provider: str | None = None
    key: str | None = None
    account: str | None = None
    spend: Usd
    prompt_tokens: Count
    completion_tokens: Count
    reasoning_tokens: Count
    requests: Count


class ModelList(Shape):
    object: Literal["list"]
    data: list[Model]


class KeyPage(Shape):
    data: list[Key]
    offset: Count
    total: Count


class MadeKey(Shape):
    key: str = Field(description="the secret, shown once")
    data: Key


class DeletedKey(Shape):
    hash: str
    deleted: Literal[True]


class LedgerPage(Shape):
    data: list[LedgerEntry]
    next_cursor: str | None = Field(description="the next page's cursor; null on the last page")


class GenerationsPage(Shape):
    data: list[Generation]
    next_cursor: str | None = Field(description="the next page's cursor; null on the last page")


class Activity(Shape):
    buckets: list[Bucket]
    totals: Totals


class ActivityItem(Shape):
    """One UTC day of one model at one provider: OpenRouter's activity row (`usage` a number,
    as it has it), with `spend`, the same USD as an exact decimal string."""

    date: str = Field(pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$", description="YYYY-MM-DD, UTC")
    model: str
    model_permaslug: str = Field(description="the model's canonical_slug")
    endpoint_id: str = Field(description="stable for a model at a provider")
    provider_name: str
    usage: float = Field(description="USD charged")
    spend: Usd
    byok_usage_inference: float = Field(description="always 0: no keys of the caller's own")
    requests: Count
    prompt_tokens: Count
    completion_tokens: Count
    reasoning_tokens: Count


class ActivityItems(Shape):
    """`GET /api/v1/activity` in OpenRouter's shape (asked with `date`, `api_key_hash` or
    `shape=openrouter`)."""

    data: list[ActivityItem]


class AdminActivity(Shape):
    accounts: Count = Field(description="accounts with any activity in the span")
    buckets: list[Bucket]
    totals: Totals


class Credits(Shape):
    """Credited and not taken back (by refunds or expiry), and used: USD as numbers, as
    OpenRouter has it."""

    total_credits: float
    total_usage: float


class Refund(Shape):
    purchase_id: str
    refunded: Usd
    fee_refunded: Usd
    fee_kept: Usd
    created_at: Time | None = None
    purchase_amount: Usd | None = Field(default=None, description="the Refund button's answer only")
    not_refunded: Usd | None = Field(
        default=None, description="what of the purchase was used or expired before the refund"
    )
    explanation: str | None = Field(default=None, description="what was refunded and kept, and why")


class Limits(Shape):
    """An account's rate-limit overrides, and the names of the limits in the file."""

    account_id: str
    overrides: dict[str, Annotated[int, Field(ge=0)] | Literal["unlimited"]]
    limits: list[str]


class PaymentReceived(Shape):
    """A payment notification taken: what it did (the fields of its event type only)."""

    received: Literal[True]
    duplicate: bool | None = None
    purchase: Purchase | None = None
    purchase_id: str | None = None
    refunded: Usd | None = None
    topup_cleared: bool | None = None
    checkout_closed: bool | None = Field(
        default=None, description="payment.failed for a checkout: it was pending, and is failed now"
    )
    late: bool | None = Field(
        default=None, description="payment.succeeded for a checkout that had expired or failed"
    )


ANSWERS: tuple[type[Shape], ...] = (
    Totals,
    Bucket,
    Account,
    Key,
    KeyHolder,
    Generation,
    Purchase,
    LedgerEntry,
    Model,
    ModelList,
    KeyPage,
    MadeKey,
    DeletedKey,
    LedgerPage,
    GenerationsPage,
    Activity,
    ActivityItems,
    AdminActivity,
    Credits,
    Refund,
    Limits,
    PaymentReceived,
)
