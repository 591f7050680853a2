"""Every configured secret taken out of what a provider sends back, before a client sees it.

A provider may quote what it was sent (its own key, in an error, in content a model echoes, in a
proxy's diagnostic page), and the gateway relays a provider's bytes to clients. Every byte that
leaves toward a client from a provider's answer (a plain 200, a stream, an error message) goes
through one Redactor that knows every secret the gateway holds: each provider's key, the admin
token, the payments webhook secret, the top-up signing secret and the metrics token.

Whole occurrences are replaced wherever they are. A stream needs more: a model that echoes a key
token by token sends it in pieces, one per event, and a client that joins the deltas (as every
SDK does) would have it whole. So each streamed text (a choice's content, reasoning, refusal, a
tool call's arguments, a completion's text) keeps back the end of its text that could still be
the start of a secret, at most the longest secret's length less one character, until the next
piece shows it is not (then it is sent, in front of that piece) or that it is (then it is
replaced). What is kept back when a choice finishes, or the stream ends, is sent then.
"""

from collections.abc import Iterable
from typing import Any

REDACTED = "[redacted]"
MIN_SECRET_LENGTH = 8  # shorter values would mangle ordinary text; settings refuse none shorter
_TEXT_FIELDS = frozenset(("content", "reasoning", "reasoning_content", "refusal"))


class Redactor:
    def __init__(self, secrets: Iterable[str]) -> None:
        found = {s for s in secrets if len(s) >= MIN_SECRET_LENGTH}
        # Longest first: a secret that contains another is replaced whole.
        self.secrets: tuple[str, ...] = tuple(sorted(found, key=len, reverse=True))
        self._raw = tuple((s.encode(), REDACTED.encode()) for s in self.secrets)
        by_last: dict[str, set[str]] = {}
        for secret in self.secrets:
            for end in range(1, len(secret)):
                by_last.setdefault(secret[end - 1], set()).add(secret[:end])
        self._prefixes = {c: sorted(p, key=len, reverse=True) for c, p in by_last.items()}

    def text(self, value: str) -> str:
        for secret in self.secrets:
            if secret in value:
                value = value.replace(secret, REDACTED)
        return value

    def bytes(self, data: bytes) -> bytes:
        for raw, marker in self._raw:
            if raw in data:
                data = data.replace(raw, marker)
        return data

    def held_back(self, value: str) -> int:
        """How many characters at the end of `value` could start a secret (0: none): the
        longest proper prefix of a secret that `value` ends with. Prefixes are indexed by their
        last character, so most texts cost one lookup (this runs for every streamed event)."""
        if not value:
            return 0
        for prefix in self._prefixes.get(value[-1], ()):
            if value.endswith(prefix):
                return len(prefix)
        return 0

    def stream(self) -> "StreamRedaction":
        return StreamRedaction(self)


class StreamRedaction:
    """One stream's texts, as its chunks pass (see the module's docstring). The relay walks each
    chunk once (gateway/proxy/relay/sse_relay.py) and hands over each output field it meets."""

    __slots__ = ("_held", "_redactor")

    def __init__(self, redactor: Redactor) -> None:
        self._redactor = redactor
        self._held: dict[tuple[int, str, int], str] = {}  # (choice, field, tool call) -> text

    def field(self, delta: dict[str, Any], name: str, value: Any, index: int, final: bool) -> None:
        """One output field of choice `index`'s delta, redacted in place."""
        if name in _TEXT_FIELDS:
            if isinstance(value, str):
                delta[name] = self.text(index, name, value, final)
        elif name == "tool_calls" and isinstance(value, list):
            for number, call in enumerate(value):
                function = call.get("function") if isinstance(call, dict) else None
                if isinstance(function, dict) and isinstance(function.get("arguments"), str):
                    key = (index, "arguments", _index(call, number))
                    function["arguments"] = self._pass(key, function["arguments"], final)

    def text(self, index: int, name: str, value: str, final: bool) -> str:
        """A streamed text (content, reasoning, refusal, a completion's text), redacted, less
        what is kept back in case it begins a secret."""
        return self._pass((index, name, 0), value, final)

    def finish(self, choice: dict[str, Any], index: int) -> None:
        """Choice `index` finishes in this chunk: it gets back all it kept."""
        if self._held:
            for key in [k for k in self._held if k[0] == index]:
                _place(choice, key, self._held.pop(key))

    def flush(self) -> list[dict[str, Any]]:
        """What is still kept back, as the `choices` of one more chunk (empty: nothing)."""
        choices: dict[int, dict[str, Any]] = {}
        for key, text in sorted(self._held.items()):
            _place(choices.setdefault(key[0], {"index": key[0]}), key, text)
        self._held.clear()
        return list(choices.values())

    def take(self, index: int, name: str) -> str:
        """What text `name` of `index` still keeps back (its end came: it is sent now)."""
        return self._held.pop((index, name, 0), "") if self._held else ""

    def rest(self) -> list[tuple[int, str, str]]:
        """Every text still kept back, as (index, name, text), and none kept any more."""
        held = [(index, name, text) for (index, name, _), text in sorted(self._held.items())]
        self._held.clear()
        return held

    def _pass(self, key: tuple[int, str, int], value: str, final: bool) -> str:
        held = self._held.pop(key, None) if self._held else None
        text = self._redactor.text(held + value if held else value)
        keep = 0 if final else self._redactor.held_back(text)
        if keep:
            self._held[key] = text[-keep:]
            return text[:-keep]
        return text


def _index(item: dict[str, Any], position: int) -> int:
    index = item.get("index", position)
    return index if isinstance(index, int) else position


def _place(choice: dict[str, Any], key: tuple[int, str, int], text: str) -> None:
    """Put kept-back text into a choice whose chunk did not carry that field."""
    _, field, call = key
    if field == "text":
        choice["text"] = text
        return
    delta = choice.get("delta")
    if not isinstance(delta, dict):
        delta = choice["delta"] = {}
    if field != "arguments":
        delta[field] = text
        return
    calls = delta.get("tool_calls")
    if not isinstance(calls, list):
        calls = delta["tool_calls"] = []
    calls.append({"index": call, "function": {"arguments": text}})
