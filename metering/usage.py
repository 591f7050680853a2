"""Usage records: what one forwarded request used and cost, as the Activity view reads it.

A generation id carries its account id (`gen-<account>-<random>`), so a record is found in its
account's slot without an index, and another account's id simply finds nothing.
"""

from dataclasses import dataclass
from typing import Any

import orjson

from metering.ids import random_hex


def new_generation_id(account_id: str) -> str:
    return f"gen-{account_id}-{random_hex(10)}"


def account_of_generation(generation_id: str) -> str | None:
    parts = generation_id.split("-")
    if len(parts) != 3 or parts[0] != "gen" or not parts[1].isalnum() or not parts[2].isalnum():
        return None
    return parts[1]


@dataclass(frozen=True, slots=True)
class UsageRecord:
    id: str
    account_id: str
    key_hash: str
    model: str
    provider_name: str
    upstream_model: str
    tokens_prompt: int
    tokens_completion: int
    native_tokens_cached: int
    native_tokens_reasoning: int
    cost: int  # nanodollars charged
    latency_ms: int  # request received -> first byte from the provider
    generation_time_ms: int  # first byte -> last byte from the provider
    streamed: bool
    cancelled: bool
    finish_reason: str | None
    status: int  # HTTP status the client was given
    usage_source: str  # "provider", "estimated" (counted chunks) or "none"
    created_at: str
    created_at_ms: int
    num_media_prompt: int = 0  # input images, each charged the model's image price (if listed)
    zero_completion_insurance: bool = False  # the charge was waived: nothing (usable) came back
    # The tries that gave way before the one that served: {"model", "provider", "status"}, the
    # status an HTTP status or "connect", "timeout", "protocol".
    failed_attempts: tuple[dict[str, Any], ...] = ()

    def to_json(self) -> str:
        return self.to_json_bytes().decode()

    def to_json_bytes(self) -> bytes:
        """As the settlement script stores it (no decode and re-encode on the request path)."""
        return orjson.dumps(self)  # orjson reads dataclasses natively, and fast

    @classmethod
    def from_json(cls, raw: str | bytes) -> "UsageRecord":
        fields = orjson.loads(raw)
        if "failed_attempts" in fields:  # a JSON array: a tuple, as the record was made
            fields["failed_attempts"] = tuple(fields["failed_attempts"])
        return cls(**fields)
