"""Read the provider's `usage` object into token counts, and write it back with `cost` added.

Chat completions and the Responses API word the same counts differently (`prompt_tokens` and
`input_tokens`, their `..._details`); UsageNames says which (Anthropic's usage, whose input
leaves its cache out, is read in gateway/proxy/apis/messages_stream.py)."""

from typing import Any, NamedTuple

from metering.money import nanos_to_number
from metering.pricing import TokenUsage

MAX_TOKENS_REPORTED = 10**9


def token_count(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if 0 <= value <= MAX_TOKENS_REPORTED else None


def detail_count(usage: dict[str, Any], section: str, name: str) -> int:
    details = usage.get(section)
    if isinstance(details, dict):
        return token_count(details.get(name)) or 0
    return 0


class UsageNames(NamedTuple):
    prompt: str
    completion: str
    prompt_details: str
    completion_details: str


CHAT_USAGE = UsageNames(
    "prompt_tokens", "completion_tokens", "prompt_tokens_details", "completion_tokens_details"
)
RESPONSES_USAGE = UsageNames(
    "input_tokens", "output_tokens", "input_tokens_details", "output_tokens_details"
)


def parse_usage(
    usage: Any, images: int = 0, *, output: bool = True, names: UsageNames = CHAT_USAGE
) -> TokenUsage | None:
    """Token counts from an OpenAI-style usage object; None when it is missing or not sane.
    Without `output` (embeddings), no completion count is expected: it is 0."""
    if not isinstance(usage, dict):
        return None
    prompt = token_count(usage.get(names.prompt))
    completion = token_count(usage.get(names.completion)) if output else 0
    if prompt is None or completion is None:
        return None
    return TokenUsage(
        prompt=prompt,
        completion=completion,
        cached=detail_count(usage, names.prompt_details, "cached_tokens"),
        cache_write=detail_count(usage, names.prompt_details, "cache_write_tokens"),
        reasoning=detail_count(usage, names.completion_details, "reasoning_tokens"),
        images=images,
    )


def usage_with_cost(
    original: Any,
    tokens: TokenUsage,
    cost_nanos: int,
    *,
    output: bool = True,
    names: UsageNames = CHAT_USAGE,
) -> dict[str, Any]:
    """The provider's usage object (or one we built) with `cost` in USD, as OpenRouter has it;
    without `output` (embeddings), only the input's counts."""
    usage: dict[str, Any] = dict(original) if isinstance(original, dict) else {}
    usage.setdefault(names.prompt, tokens.prompt)
    if output:
        usage.setdefault(names.completion, tokens.completion)
    usage.setdefault("total_tokens", tokens.total)
    if output:
        usage.setdefault(names.prompt_details, {"cached_tokens": tokens.cached})
        usage.setdefault(names.completion_details, {"reasoning_tokens": tokens.reasoning})
    usage["cost"] = nanos_to_number(cost_nanos)
    return usage
