"""The bodies the JSON APIs take, as typed models: the handlers read them with `read_as`, and the
OpenAPI document takes their schemas from them (gateway.api.openapi.schemas), so a field is
written once.

Each field's check is its own and names the field: a problem is a 400 in the error shape with
`metadata.field`, its message saying what the field must be. Bounds that are settings (the
largest purchase) and the time a key's expiry is measured from come in the validation context.
Unknown fields are ignored, except in a key's changes, where naming a field that cannot be changed
is a 400 rather than a silent no-op. A payment notification is one of three event models, picked
by its `type` (PAYMENT_EVENTS); an account's limit overrides are a map from the limit file's names
(given in the context) to counts.
"""

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    RootModel,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
)

from config.limits import MAX_TOKENS
from gateway.http.errors import bad_request
from metering.money import AmountError, parse_usd
from ratelimit.policy import UNLIMITED

MAX_KEY_LIFETIME_MS = 100 * 365 * 86_400_000
LIMIT_RESETS = ("daily", "weekly", "monthly")
CHANGEABLE = ("name", "disabled", "limit", "limit_reset", "expires_at")
Check = Callable[[Any, ValidationInfo], Any]


def _field(info: ValidationInfo) -> str:
    """The field's name; a map's value has none, and read_as puts the key in its place."""
    return info.field_name or "{field}"


def _text(max_len: int, *, required: bool = False) -> Check:
    def check(value: Any, info: ValidationInfo) -> str | None:
        if value is None:
            if required:
                raise ValueError(f"'{_field(info)}' is required")
            return None
        if not isinstance(value, str) or not value.strip() or len(value) > max_len:
            raise ValueError(
                f"'{_field(info)}' must be a non-empty string of at most {max_len} characters"
            )
        return value

    return check


def _usd(max_decimals: int, *, allow_zero: bool = False, required: bool = False) -> Check:
    def check(value: Any, info: ValidationInfo) -> Decimal | None:
        name = _field(info)
        if value is None:
            if required:
                raise ValueError(f"'{name}' is required: a positive decimal string in USD")
            return None
        try:
            amount = parse_usd(value, max_decimals=max_decimals, allow_zero=allow_zero)
        except AmountError as exc:
            raise ValueError(f"'{name}' {exc}") from None
        maximum = (info.context or {}).get("max_usd")
        if maximum is not None and amount > maximum:
            raise ValueError(f"'{name}' must be at most {maximum}")
        return amount

    return check


def _bool(value: Any, info: ValidationInfo) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise ValueError(f"'{_field(info)}' must be true or false")
    return value


def _choice(*allowed: str) -> Check:
    def check(value: Any, info: ValidationInfo) -> str:
        if value not in allowed:
            raise ValueError(f"'{_field(info)}' must be one of {', '.join(allowed)}")
        return str(value)

    return check


def _limit_reset(value: Any, info: ValidationInfo) -> str | None:
    if value is None or value == "none":
        return None
    if value not in LIMIT_RESETS:
        raise ValueError("'limit_reset' must be one of none, daily, weekly, monthly")
    return str(value)


def _expires_at(value: Any, info: ValidationInfo) -> int | None:
    """An RFC 3339 time with a zone, in the future, within 100 years: as epoch milliseconds."""
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 40:
        raise ValueError("'expires_at' must be an RFC 3339 time such as 2027-01-31T00:00:00Z")
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError("'expires_at' is not an RFC 3339 time") from None
    if when.tzinfo is None:
        raise ValueError("'expires_at' needs a time zone (Z for UTC)")
    ms = int(when.timestamp() * 1000)
    now_ms = float((info.context or {}).get("now", 0)) * 1000
    if ms <= now_ms:
        raise ValueError("'expires_at' must be in the future")
    if ms > now_ms + MAX_KEY_LIFETIME_MS:
        raise ValueError("'expires_at' must be within 100 years")
    return ms


_USD_INPUT = {
    "type": "string",
    "pattern": r"^[0-9]{1,9}(\.[0-9]{1,9})?$",
    "description": "US dollars as a decimal string (never a float)",
    "examples": ["5.00"],
}
_CENTS_INPUT = {
    "type": "string",
    "pattern": r"^[0-9]{1,6}(\.[0-9]{1,2})?$",
    "description": "US dollars in whole cents, positive, at most `max_purchase` (100000)",
    "examples": ["10.00"],
}
_NAME = {"type": "string", "minLength": 1, "maxLength": 200}
_OR_NULL = {"type": ["string", "null"]}  # an optional field's schema also takes its null default
Name = Annotated[str | None, BeforeValidator(_text(200)), WithJsonSchema({**_NAME, **_OR_NULL})]
Flag = Annotated[bool | None, BeforeValidator(_bool), WithJsonSchema({"type": ["boolean", "null"]})]
Grant = Annotated[
    Decimal | None,
    BeforeValidator(_usd(9, allow_zero=True)),
    WithJsonSchema(
        {**_USD_INPUT, **_OR_NULL, "description": "free credits to start with (default: setting)"}
    ),
]
Cents = Annotated[
    Decimal | None, BeforeValidator(_usd(2)), WithJsonSchema({**_CENTS_INPUT, **_OR_NULL})
]
RequiredCents = Annotated[
    Decimal, BeforeValidator(_usd(2, required=True)), WithJsonSchema(_CENTS_INPUT)
]
KeyLimit = Annotated[
    Decimal | None,
    BeforeValidator(_usd(9)),
    WithJsonSchema({"oneOf": [_USD_INPUT, {"type": "null"}], "description": "USD"}),
]
LimitReset = Annotated[
    str | None,
    BeforeValidator(_limit_reset),
    WithJsonSchema(
        {"type": ["string", "null"], "enum": ["none", "daily", "weekly", "monthly", None]}
    ),
]
ExpiresAt = Annotated[
    int | None,
    BeforeValidator(_expires_at),
    WithJsonSchema(
        {
            "type": ["string", "null"],
            "format": "date-time",
            "description": "RFC 3339 with a zone, in the future",
        }
    ),
]
Method = Annotated[
    Literal["card", "alipay", "crypto"],
    BeforeValidator(_choice("card", "alipay", "crypto")),
    WithJsonSchema({"enum": ["card", "alipay", "crypto"]}),
]
IdempotencyKey = Annotated[str, BeforeValidator(_text(200)), WithJsonSchema(_NAME)]
Reference = Annotated[str, BeforeValidator(_text(200, required=True)), WithJsonSchema(_NAME)]
OptionalReference = Annotated[
    str | None, BeforeValidator(_text(200)), WithJsonSchema({**_NAME, **_OR_NULL})
]
AccountId = Annotated[
    str,
    BeforeValidator(_text(64, required=True)),
    WithJsonSchema({"type": "string", "minLength": 1, "maxLength": 64}),
]


def _limit_name(value: Any, info: ValidationInfo) -> str:
    if value not in (info.context or {}).get("limit_names", ()):
        raise ValueError(f"no limit named {value!r} in the rate-limit file")
    return str(value)


def _override(value: Any, info: ValidationInfo) -> int | None:
    """A count, "unlimited" (stored as ratelimit's UNLIMITED), or None to drop the override."""
    if value is None:
        return None
    if value == "unlimited":
        return UNLIMITED
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_OVERRIDE:
        return value
    raise ValueError(
        f"'{_field(info)}' must be a whole number (requests, tokens or requests in flight, as "
        f'the limit counts), "unlimited" or null'
    )


MAX_OVERRIDE = MAX_TOKENS  # the largest count a limit may have (a token limit's)
LimitName = Annotated[str, BeforeValidator(_limit_name)]
Override = Annotated[
    int | None,
    BeforeValidator(_override),
    WithJsonSchema(
        {
            "oneOf": [
                {"type": "integer", "minimum": 0, "maximum": MAX_OVERRIDE},
                {"const": "unlimited"},
                {"type": "null"},
            ]
        }
    ),
]


class Body(BaseModel):
    model_config = ConfigDict(frozen=True)


class NewAccount(Body):
    name: Name = None
    grant: Grant = None


class AutoTopupSettings(Body):
    """Both to turn it on, neither to turn it off."""

    threshold: Cents = None
    amount: Cents = None


class NewPurchase(Body):
    amount: RequiredCents
    method: Method
    idempotency_key: IdempotencyKey


class NewCheckout(Body):
    """What the account holder asks to buy (the fee is on top)."""

    amount: RequiredCents
    method: Method


class NewKey(Body):
    name: Name = None
    limit: KeyLimit = None
    limit_reset: LimitReset = None
    expires_at: ExpiresAt = None
    management: Flag = Field(
        None, description="a management key (the operator's admin API only; 403 elsewhere)"
    )


class KeyChanges(Body):
    """Only the fields the body names change; any other field is refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Name = None
    disabled: Flag = None
    limit: KeyLimit = None
    limit_reset: LimitReset = None
    expires_at: ExpiresAt = None


class LimitOverrides(RootModel[dict[LimitName, Override]]):
    """Limit name -> a count, "unlimited", or null to drop the override; the names are the
    rate-limit file's (`limit_names` in the context). Limits not named keep their state."""

    model_config = ConfigDict(frozen=True, json_schema_extra={"examples": [{"free-per-day": 5000}]})


class PaymentSucceededData(Body):
    account_id: AccountId
    payment_id: Reference = Field(description="the purchase's idempotency key")
    amount: RequiredCents
    method: Method
    checkout_id: OptionalReference = Field(
        None, description="the checkout.requested event's checkout this payment pays"
    )


class PaymentRefundedData(Body):
    account_id: AccountId
    payment_id: Reference


class PaymentFailedData(Body):
    account_id: AccountId
    payment_id: OptionalReference = None
    topup_id: OptionalReference = Field(None, description="the topup.requested event's id")
    checkout_id: OptionalReference = Field(
        None, description="the checkout that will not be paid (declined, failed)"
    )


class PaymentSucceeded(Body):
    id: Reference
    type: Literal["payment.succeeded"]
    data: PaymentSucceededData


class PaymentRefunded(Body):
    id: Reference
    type: Literal["payment.refunded"]
    data: PaymentRefundedData


class PaymentFailed(Body):
    """An auto top-up request that will not be bought (a new one may be made), or a checkout
    that will not be paid."""

    id: Reference
    type: Literal["payment.failed"]
    data: PaymentFailedData


PaymentEvent = PaymentSucceeded | PaymentRefunded | PaymentFailed
PAYMENT_EVENTS: dict[str, type[PaymentEvent]] = {
    "payment.succeeded": PaymentSucceeded,
    "payment.refunded": PaymentRefunded,
    "payment.failed": PaymentFailed,
}

M = TypeVar("M", bound=BaseModel)
_NOT_AN_OBJECT = ("model_type", "model_attributes_type", "dict_type")


def read_as(model: type[M], body: Any, **context: Any) -> M:
    """`body` as `model`, or the 400 that names the first field in the way (the innermost
    name: `amount`, not `data`)."""
    try:
        return model.model_validate(body, context=context)
    except ValidationError as exc:
        error = exc.errors()[0]
        names = [str(part) for part in error["loc"] if isinstance(part, str) and part != "[key]"]
        field = names[-1][:64] if names else None
        if error["type"] == "extra_forbidden":
            message = (
                f"'{field}' cannot be changed; change {', '.join(CHANGEABLE[:-1])} or "
                f"{CHANGEABLE[-1]}"
            )
        elif error["type"] == "missing":
            message = f"'{field}' is required"
        elif error["type"] in _NOT_AN_OBJECT:
            message = f"'{field}' must be an object" if field else "the body must be an object"
        else:
            message = str(error["msg"]).removeprefix("Value error, ")
            message = message.replace("'{field}'", f"'{field}'")
        raise bad_request(message, field) from None


BODIES: tuple[type[BaseModel], ...] = (
    NewAccount,
    AutoTopupSettings,
    NewPurchase,
    NewCheckout,
    NewKey,
    KeyChanges,
    LimitOverrides,
    *PAYMENT_EVENTS.values(),
)
