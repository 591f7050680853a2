"""Estimate a request's prompt tokens before the provider counts them, for the reservation.

Everything in the body may reach the model (messages, tools and their schemas, response formats,
predictions, token-id prompts), so the estimate starts from the whole body's size: half its UTF-8
bytes, plus a few tokens of framing per message. A BPE token is at least one byte of ordinary
text and English averages about four, so this covers the real prompt in practice without
refusing requests the balance can carry; a token id in a prompt array takes at least two bytes
("7,"), so it counts at least once. Image parts are the exception: a base64 image is mostly bytes,
so its bytes are left out and it counts IMAGE_TOKENS whatever its encoding. The image parts are
counted too: a model's listed `image` price is per input image, and providers do not report it.

Beside that bound, a likely count: about four characters a token of the text the model reads, and
three tokens of framing a message. It is what a stream whose client hung up is charged for its
prompt when the provider's own count could not be had (never more than the bound).
"""

from typing import Any, NamedTuple

TOKENS_PER_MESSAGE = 4
LIKELY_CHARS_PER_TOKEN = 4
LIKELY_TOKENS_PER_MESSAGE = 3
_READ_FIELDS = ("messages", "prompt", "tools", "functions", "input", "system", "instructions")
IMAGE_TOKENS = 1500
_IMAGE_TYPES = ("image_url", "input_image", "image")


class PromptEstimate(NamedTuple):
    tokens: int  # the bound the reservation covers
    images: int  # image parts in the messages' content
    likely: int = 0  # the likely count (see above), at most `tokens`


def estimate_prompt(body: dict[str, Any], body_bytes: int) -> PromptEstimate:
    """Messages (chat, Anthropic's) or the Responses API's input items: what may hold images."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        items = body.get("input")
        messages = [m for m in items if isinstance(m, dict)] if isinstance(items, list) else []
    images, image_bytes = _images(messages)
    text_bytes = max(body_bytes - image_bytes, 0)
    tokens = -(-text_bytes // 2) + TOKENS_PER_MESSAGE * len(messages) + IMAGE_TOKENS * images
    chars = sum(_chars(body.get(field)) for field in _READ_FIELDS)
    likely = -(-chars // LIKELY_CHARS_PER_TOKEN) + LIKELY_TOKENS_PER_MESSAGE * len(messages)
    return PromptEstimate(tokens, images, min(likely, tokens))


def _images(messages: list[Any]) -> tuple[int, int]:
    """(image parts, their bytes) in the messages' content parts."""
    count, size = 0, 0
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            continue
        for part in content:
            if isinstance(part, dict) and part.get("type") in _IMAGE_TYPES:
                count += 1
                size += _size(part)
    return count, size


def _chars(value: Any) -> int:
    """Characters of the text in a value (strings anywhere in it; image parts count none)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        if value.get("type") in _IMAGE_TYPES:
            return 0
        return sum(_chars(v) for v in value.values())
    if isinstance(value, list):
        return sum(_chars(v) for v in value)
    return 0


def _size(value: Any) -> int:
    if isinstance(value, str):
        return len(value.encode("utf-8", "surrogatepass"))
    if isinstance(value, dict):
        return sum(_size(v) for v in value.values())
    if isinstance(value, list):
        return sum(_size(v) for v in value)
    return 0
