"""The fields of an API key as the admin API and the management-key API take them (their bodies:
gateway.api.bodies.NewKey and KeyChanges), as AccountStore's keyword arguments."""

from typing import Any

from gateway.api.bodies import KeyChanges, NewKey
from gateway.http.errors import bad_request
from metering.money import usd_to_nanos


def new_key_fields(key: NewKey) -> dict[str, Any]:
    """Keyword arguments for AccountStore.create_key (less `management`, which the caller
    decides)."""
    return {
        "name": key.name or "",
        "limit": None if key.limit is None else usd_to_nanos(key.limit),
        "limit_reset": key.limit_reset,
        "expires_at_ms": key.expires_at,
    }


def key_changes(changes: KeyChanges) -> dict[str, Any]:
    """Keyword arguments for AccountStore.update_key: only the fields the body named."""
    named = changes.model_fields_set
    found: dict[str, Any] = {}
    if "expires_at" in named:
        found["expires_at_ms"] = changes.expires_at
    if changes.disabled is not None:
        found["disabled"] = changes.disabled
    if "name" in named:
        if changes.name is None:
            raise bad_request("'name' is required", "name")
        found["name"] = changes.name
    if "limit" in named:
        found["limit"] = None if changes.limit is None else usd_to_nanos(changes.limit)
    if "limit_reset" in named:
        found["limit_reset"] = changes.limit_reset
    return found
