"""How `GET /api/v1/key` shows the rate limits that count the key's requests: what each counts,
what it allows the account, what is used and what is left now."""

from typing import Literal

from pydantic import Field

from gateway.api.answers.shapes_base import Count, Shape, Time


class RateLimitState(Shape):
    name: str
    description: str | None
    kind: Literal["requests", "tokens", "concurrent"] = Field(
        description="requests or tokens per window, or requests in flight at once"
    )
    count: Literal["total", "prompt", "completion"] | None = Field(
        description="which tokens a token limit counts; null for the other kinds"
    )
    scope: Literal["account", "key"]
    match: str = Field(
        description='"free", "all", "model:<glob>" or "provider:<name>": the requests it counts'
    )
    window: Literal["second", "minute", "hour", "day"] | None = Field(
        description="the fixed UTC window; null for requests in flight"
    )
    limit: int | None = Field(description="null: unlimited (an operator's override)")
    used: Count = Field(
        description="counted in the current window (a token limit: used, and the worst case of "
        "requests in flight), or requests in flight now"
    )
    remaining: int | None
    resets_at: Time | None = Field(description="when the window ends; null for in flight")
    shadow: bool = Field(description="counted and reported, never refused")
