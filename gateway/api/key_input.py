"""The fields of an API key as the admin API and the management-key API take them."""

from datetime import datetime
from decimal import Decimal
from typing import Any

from gateway.http.errors import bad_request
from gateway.http.json_input import bool_field, text_field, usd_field
from metering.accounts import LimitReset
from metering.money import usd_to_nanos

LIMIT_RESETS = ("daily", "weekly", "monthly")
MAX_LIFETIME_MS = 100 * 365 * 86_400_000
CHANGEABLE = frozenset({"name", "disabled", "limit", "limit_reset", "expires_at"})


def new_key_fields(body: dict[str, Any], max_limit: Decimal, now: float) -> dict[str, Any]:
    """Keyword arguments for AccountStore.create_key (less `management`, which the caller
    decides), from `{"name", "limit"?, "limit_reset"?, "expires_at"?}`."""
    limit = usd_field(body, "limit", max_decimals=9, maximum=max_limit)
    return {
        "name": text_field(body, "name", default="") or "",
        "limit": None if limit is None else usd_to_nanos(limit),
        "limit_reset": limit_reset(body),
        "expires_at_ms": expires_at_ms(body, now),
    }


def key_changes(body: dict[str, Any], max_limit: Decimal, now: float) -> dict[str, Any]:
    """Keyword arguments for AccountStore.update_key: only the fields the body names; a field
    that cannot be changed is a 400, not a silent no-op."""
    for name in body:
        if name not in CHANGEABLE:
            raise bad_request(
                f"'{name}' cannot be changed; change name, disabled, limit, "
                "limit_reset or expires_at",
                str(name)[:64],
            )
    changes: dict[str, Any] = {}
    if "expires_at" in body:
        changes["expires_at_ms"] = expires_at_ms(body, now)
    disabled = bool_field(body, "disabled")
    if disabled is not None:
        changes["disabled"] = disabled
    if "name" in body:
        changes["name"] = text_field(body, "name", required=True)
    if "limit" in body:
        limit = usd_field(body, "limit", max_decimals=9, maximum=max_limit)
        changes["limit"] = None if limit is None else usd_to_nanos(limit)
    if "limit_reset" in body:
        changes["limit_reset"] = limit_reset(body)
    return changes


def limit_reset(body: dict[str, Any]) -> LimitReset | None:
    value = body.get("limit_reset")
    if value is None or value == "none":
        return None
    if value not in LIMIT_RESETS:
        raise bad_request(
            "'limit_reset' must be one of none, daily, weekly, monthly", "limit_reset"
        )
    return value  # type: ignore[no-any-return]


def expires_at_ms(body: dict[str, Any], now: float) -> int | None:
    value = body.get("expires_at")
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 40:
        raise bad_request(
            "'expires_at' must be an RFC 3339 time such as 2027-01-31T00:00:00Z", "expires_at"
        )
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise bad_request("'expires_at' is not an RFC 3339 time", "expires_at") from None
    if when.tzinfo is None:
        raise bad_request("'expires_at' needs a time zone (Z for UTC)", "expires_at")
    ms = int(when.timestamp() * 1000)
    if ms <= now * 1000:
        raise bad_request("'expires_at' must be in the future", "expires_at")
    if ms > now * 1000 + MAX_LIFETIME_MS:
        raise bad_request("'expires_at' must be within 100 years", "expires_at")
    return ms
