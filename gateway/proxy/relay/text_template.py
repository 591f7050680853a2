"""Most events of a chat stream differ from the one before only in their text: the same id,
model, `created`, choice and `"finish_reason":null`, a new `"content":"..."`. Once one such event
went through the whole parse (sse_relay.py), the relay keeps its bytes around the text, as the
provider sent them and as the client was sent them; the next event that has the same bytes
around a plain text (no quote inside) is relayed by putting its text between the client's,
without parsing or writing JSON. Anything else (a finish reason, usage, a role, a tool call, two
choices, other fields) differs from the template and takes the whole parse, which may make a new
template.
"""

import re
from dataclasses import dataclass
from typing import Any

import orjson

_NOT_PLAIN = re.compile(rb'["\x00-\x1f]')


@dataclass(frozen=True, slots=True)
class TextTemplate:
    sent_before: bytes  # the provider's bytes up to the text's first character
    sent_after: bytes  # from the text's closing quote on
    out_before: bytes  # the client's
    out_after: bytes
    field: str  # "content" (a chat delta's) or "text" (a completion's)
    index: int  # the choice's index, for the stream's redaction

    def text_of(self, data: bytes) -> tuple[bytes, str] | None:
        """The event's text as the client's JSON has it, and decoded, when it fits the
        template."""
        before, after = self.sent_before, self.sent_after
        if not (data.startswith(before) and data.endswith(after)):
            return None
        if len(data) < len(before) + len(after):
            return None
        raw = data[len(before) : len(data) - len(after)]
        if _NOT_PLAIN.search(raw):
            return None  # a quote (escaped or not) or a raw control byte: parse it whole
        try:
            if b"\\" not in raw:
                return raw, raw.decode()
            text = orjson.loads(b'"' + raw + b'"')
        except (orjson.JSONDecodeError, UnicodeDecodeError):
            return None
        return orjson.dumps(text)[1:-1], text  # escapes written as the full parse writes them

    def event(self, raw: bytes) -> bytes:
        return b"data: " + self.out_before + raw + self.out_after + b"\n\n"


def plain_text(chunk: dict[str, Any]) -> tuple[str, int, str] | None:
    """(field, choice index, text) when the chunk is one choice with one non-empty text and
    nothing else that the relay acts on (no finish reason, no usage): a template's shape."""
    if chunk.get("usage") is not None:
        return None
    choices = chunk.get("choices")
    if not isinstance(choices, list) or len(choices) != 1 or not isinstance(choices[0], dict):
        return None
    choice = choices[0]
    index = choice.get("index", 0)
    if choice.get("finish_reason") is not None or not isinstance(index, int):
        return None
    delta = choice.get("delta")
    if "text" not in choice and isinstance(delta, dict) and len(delta) == 1:
        text = delta.get("content")
        return ("content", index, text) if isinstance(text, str) and text else None
    text = choice.get("text")
    if delta is None and isinstance(text, str) and text:
        return "text", index, text
    return None


def make_template(
    data: bytes, out: bytes, field: str, index: int, text: str, sent: str
) -> TextTemplate | None:
    """The template of an event whose data was `data` and whose client's JSON is `out`, with
    `text` (as the provider sent it; `sent`: as the client got it) in `field`."""
    name = b'"' + field.encode() + b'":'
    if data.count(name) != 1 or out.count(name) != 1:
        return None
    start = data.find(name + b'"')
    if start < 0:
        return None
    start += len(name) + 1
    end = data.find(b'"', start)
    raw = data[start:end]
    if end < 0 or b"\\" in raw or raw.decode(errors="replace") != text:
        return None
    out_raw = orjson.dumps(sent)
    at = out.find(name + out_raw)
    if at < 0:
        return None
    at += len(name) + 1
    return TextTemplate(
        sent_before=data[:start],
        sent_after=data[end:],
        out_before=out[:at],
        out_after=out[at + len(out_raw) - 2 :],
        field=field,
        index=index,
    )
