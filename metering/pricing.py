"""Cost of one request at the provider's listed price, with no markup.

Prices are held as integer attodollars (1e-18 USD) per token, so that every product is an exact
integer; the total is rounded once per request to nanodollars. Example: 1,234 prompt tokens at
$0.00000015 and 56 completion tokens at $0.0000006 cost 185,100 + 33,600 = 218,700 nanodollars.
"""

from dataclasses import dataclass, replace
from decimal import Decimal

from config.catalog import Pricing

ATTOS_PER_NANO = 10**9
_ATTOS_PER_USD = 10**18


def _attos(price: Decimal | None) -> int | None:
    return None if price is None else int(price * _ATTOS_PER_USD)


@dataclass(frozen=True, slots=True)
class TokenUsage:
    prompt: int = 0
    completion: int = 0
    cached: int = 0  # part of `prompt` read from the provider's cache
    cache_write: int = 0  # part of `prompt` written to the cache
    reasoning: int = 0  # part of `completion` spent on reasoning
    images: int = 0

    @property
    def total(self) -> int:
        return self.prompt + self.completion


@dataclass(frozen=True, slots=True)
class PriceTable:
    """One model's listed prices in attodollars; built once per catalog load."""

    prompt: int
    completion: int
    request: int
    image: int
    reasoning: int | None
    cache_read: int | None
    cache_write: int | None

    @classmethod
    def from_pricing(cls, p: Pricing) -> "PriceTable":
        return cls(
            prompt=_attos(p.prompt) or 0,
            completion=_attos(p.completion) or 0,
            request=_attos(p.request) or 0,
            image=_attos(p.image) or 0,
            reasoning=_attos(p.internal_reasoning),
            cache_read=_attos(p.input_cache_read),
            cache_write=_attos(p.input_cache_write),
        )

    @property
    def is_free(self) -> bool:
        return not any(
            (
                self.prompt,
                self.completion,
                self.request,
                self.image,
                self.reasoning or 0,
                self.cache_read or 0,
                self.cache_write or 0,
            )
        )

    def cost_attos(self, u: TokenUsage) -> int:
        cached = min(max(u.cached, 0), u.prompt)
        written = min(max(u.cache_write, 0), u.prompt - cached)
        plain_prompt = u.prompt - cached - written
        reasoning = min(max(u.reasoning, 0), u.completion)
        attos = plain_prompt * self.prompt + u.completion * self.completion + self._fixed(u.images)
        attos += cached * (self.prompt if self.cache_read is None else self.cache_read)
        attos += written * (self.prompt if self.cache_write is None else self.cache_write)
        if self.reasoning is not None:
            attos += reasoning * (self.reasoning - self.completion)
        return max(attos, 0)

    def cost_nanos(self, u: TokenUsage) -> int:
        """Exact cost, rounded half up once to the nanodollar."""
        return (self.cost_attos(u) + ATTOS_PER_NANO // 2) // ATTOS_PER_NANO

    def cache_discount_nanos(self, u: TokenUsage) -> int | None:
        """What the provider's cache changed in the cost: the cost with every prompt token at
        the prompt price, less the cost. Positive when cache reads are cheaper, negative when
        cache writes cost more (as OpenRouter's `cache_discount` has it); None when no token
        was read from or written to a cache. 1,000 cached of 1,200 prompt tokens at $0.0000025,
        read at $0.00000125: 1,000 times $0.00000125 saved, 1,250,000 nanodollars."""
        if u.cached <= 0 and u.cache_write <= 0:
            return None
        return self.cost_nanos(replace(u, cached=0, cache_write=0)) - self.cost_nanos(u)

    def worst_case_nanos(
        self, prompt_tokens: int, max_completion_tokens: int, images: int = 0
    ) -> int:
        """What a request may cost at most, rounded up: what admission reserves."""
        attos = (
            prompt_tokens * self._worst_prompt_price
            + max_completion_tokens * self._worst_output_price
            + self._fixed(images)
        )
        return -(-attos // ATTOS_PER_NANO)

    def affordable_output(
        self, available: int, prompt_tokens: int, completions: int, images: int = 0
    ) -> int:
        """The largest max_tokens whose worst case (for `completions` completions) fits in
        `available` nanodollars: the inverse of worst_case_nanos."""
        out_price = self._worst_output_price * max(completions, 1)
        spare = (
            available * ATTOS_PER_NANO
            - prompt_tokens * self._worst_prompt_price
            - self._fixed(images)
        )
        if not out_price:
            return 0
        return max(spare // out_price, 0)

    def _fixed(self, images: int) -> int:
        """What does not depend on tokens: the per-request price, and the input images'."""
        return self.request + images * self.image

    @property
    def _worst_output_price(self) -> int:
        return max(self.completion, self.reasoning or 0)

    @property
    def _worst_prompt_price(self) -> int:
        return max(self.prompt, self.cache_write or 0)
