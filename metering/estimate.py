"""Estimate a request's prompt tokens before the provider counts them, for the reservation.

A BPE token is at least one byte for ordinary text; English averages about four. We take half the
UTF-8 bytes of the text plus a few tokens of framing per message: generous enough that the
reservation covers the real prompt in practice, without refusing requests the balance can carry.
An image part counts as IMAGE_TOKENS whatever its encoding (a base64 image is mostly bytes).
"""

from typing import Any

TOKENS_PER_MESSAGE = 4
IMAGE_TOKENS = 1500
_MAX_DEPTH = 8


def estimate_prompt_tokens(body: dict[str, Any]) -> int:
    if "messages" in body and isinstance(body["messages"], list):
        messages = body["messages"]
        text_bytes, images = 0, 0
        for message in messages:
            b, i = _measure(message, 0)
            text_bytes += b
            images += i
        return -(-text_bytes // 2) + TOKENS_PER_MESSAGE * len(messages) + IMAGE_TOKENS * images + 3
    b, i = _measure(body.get("prompt", ""), 0)
    return -(-b // 2) + IMAGE_TOKENS * i + 1


def _measure(value: Any, depth: int) -> tuple[int, int]:
    """(UTF-8 bytes of text, image parts) in a message, its content parts and tool calls."""
    if depth > _MAX_DEPTH:
        return 0, 0
    if isinstance(value, str):
        return len(value.encode("utf-8", "surrogatepass")), 0
    if isinstance(value, list):
        total, images = 0, 0
        for item in value:
            b, i = _measure(item, depth + 1)
            total += b
            images += i
        return total, images
    if isinstance(value, dict):
        if value.get("type") in ("image_url", "input_image", "image"):
            return 0, 1
        total, images = 0, 0
        for k, v in value.items():
            if k == "role":
                continue
            b, i = _measure(v, depth + 1)
            total += b
            images += i
        return total, images
    return 0, 0
