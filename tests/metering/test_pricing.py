from dataclasses import replace
from decimal import Decimal

import orjson

from config.catalog import Pricing
from metering.estimate import estimate_prompt
from metering.pricing import PriceTable, TokenUsage

MINI = PriceTable.from_pricing(
    Pricing(prompt=Decimal("0.00000015"), completion=Decimal("0.0000006"))
)


def test_listed_price_without_markup() -> None:
    # 1,234 x $0.00000015 + 56 x $0.0000006 = $0.0001851 + $0.0000336 = $0.0002187
    assert MINI.cost_nanos(TokenUsage(prompt=1234, completion=56)) == 218_700


def test_rounded_once_half_up_per_request() -> None:
    tiny = PriceTable.from_pricing(Pricing(prompt=Decimal("0.0000000375")))
    # 3 x 37.5 nanos = 112.5 -> 113 (rounded once, not per token: 3 x 38 would be 114)
    assert tiny.cost_nanos(TokenUsage(prompt=3)) == 113
    assert tiny.cost_nanos(TokenUsage(prompt=1)) == 38  # 37.5 -> 38
    assert tiny.cost_nanos(TokenUsage(prompt=2)) == 75


def test_request_and_cache_prices() -> None:
    table = PriceTable.from_pricing(
        Pricing(
            prompt=Decimal("0.000003"),
            completion=Decimal("0.000015"),
            request=Decimal("0.001"),
            input_cache_read=Decimal("0.0000003"),
        )
    )
    usage = TokenUsage(prompt=1000, completion=100, cached=800)
    # 200 plain x 3000 + 800 cached x 300 + 100 x 15000 + 1,000,000 request
    assert table.cost_nanos(usage) == 600_000 + 240_000 + 1_500_000 + 1_000_000


def test_unlisted_cache_price_bills_cached_tokens_at_prompt_price() -> None:
    assert MINI.cost_nanos(TokenUsage(prompt=100, cached=100)) == 15_000


def test_reasoning_price_replaces_completion_price_for_reasoning_tokens() -> None:
    table = PriceTable.from_pricing(
        Pricing(completion=Decimal("0.00001"), internal_reasoning=Decimal("0.00002"))
    )
    assert table.cost_nanos(TokenUsage(completion=10, reasoning=4)) == 6 * 10_000 + 4 * 20_000


def test_worst_case_rounds_up_and_covers_real_cost() -> None:
    tiny = PriceTable.from_pricing(Pricing(prompt=Decimal("0.0000000375")))
    assert tiny.worst_case_nanos(3, 0) == 113  # 112.5 -> 113
    assert MINI.worst_case_nanos(10, 100) >= MINI.cost_nanos(TokenUsage(prompt=10, completion=100))


def test_free_model_costs_nothing() -> None:
    free = PriceTable.from_pricing(Pricing())
    assert free.is_free and free.cost_nanos(TokenUsage(prompt=10**6, completion=10**6)) == 0


def _estimate(body: dict[str, object]) -> int:
    return estimate_prompt(body, len(orjson.dumps(body))).tokens


def test_prompt_estimate_is_generous_and_skips_image_bytes() -> None:
    text = "hello world " * 100  # 1,200 bytes, about 300 real tokens
    assert _estimate({"messages": [{"role": "user", "content": text}]}) >= 600
    image = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this?"},
                    {
                        "type": "image_url",
                        "image_url": {"url": "data:image/png;base64," + "A" * 100_000},
                    },
                ],
            }
        ]
    }
    assert 1500 < _estimate(image) < 1600
    assert estimate_prompt(image, len(orjson.dumps(image))).images == 1


def test_prompt_estimate_counts_tools_and_token_ids() -> None:
    tools = [
        {"type": "function", "function": {"name": f"f{i}", "description": "x" * 1000}}
        for i in range(100)
    ]
    assert _estimate({"messages": [{"role": "user", "content": "hi"}], "tools": tools}) > 50_000
    assert _estimate({"prompt": list(range(500_000))}) >= 500_000


def test_input_images_cost_their_listed_price_in_the_charge_and_the_worst_case() -> None:
    vision = PriceTable.from_pricing(
        Pricing(
            prompt=Decimal("0.00000015"), completion=Decimal("0.0000006"), image=Decimal("0.001")
        )
    )
    text = TokenUsage(prompt=10, completion=100)
    assert vision.cost_nanos(replace(text, images=3)) == vision.cost_nanos(text) + 3_000_000
    assert (
        vision.worst_case_nanos(10, 100, images=3) == vision.worst_case_nanos(10, 100) + 3_000_000
    )
    # What 3 images leave of $0.004 buys (0.004 - 0.003 - 10 x 0.00000015) / 0.0000006 tokens.
    assert vision.affordable_output(4_000_000, 10, 1, images=3) == 1664
    assert vision.affordable_output(2_000_000, 10, 1, images=3) == 0


def test_cache_discount_is_what_the_cache_changed_in_the_cost() -> None:
    table = PriceTable.from_pricing(
        Pricing(
            prompt=Decimal("0.000003"),
            completion=Decimal("0.000015"),
            input_cache_read=Decimal("0.0000003"),
            input_cache_write=Decimal("0.00000375"),
        )
    )
    # 800 read at $0.0000003 instead of $0.000003: 800 x $0.0000027 = $0.00216 saved.
    usage = TokenUsage(prompt=1000, completion=10, cached=800)
    assert table.cache_discount_nanos(usage) == 2_160_000
    # 100 written at $0.00000375: 100 x $0.00000075 = $0.000075 more, a negative discount.
    assert table.cache_discount_nanos(TokenUsage(prompt=1000, cache_write=100)) == -75_000
    assert table.cache_discount_nanos(TokenUsage(prompt=1000, completion=10)) is None
    assert MINI.cache_discount_nanos(TokenUsage(prompt=100, cached=100)) == 0  # no cache price
