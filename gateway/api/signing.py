"""Webhook signatures: `Gateway-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.body">`,
the scheme payment providers commonly use. The timestamp is signed with the body, so a captured
request cannot be replayed outside the window, nor its body changed."""

import hashlib
import hmac

SIGNATURE_HEADER = "Gateway-Signature"
REPLAY_WINDOW_SECONDS = 300


class BadSignature(Exception):
    pass


class StaleSignature(Exception):
    pass


def sign(secret: str, body: bytes, timestamp: int) -> str:
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(secret: str, body: bytes, header: str | None, now: float) -> None:
    """Raises BadSignature (missing, malformed or wrong) or StaleSignature (outside the window)."""
    if not header or len(header) > 1024:
        raise BadSignature("missing signature")
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        name, _, value = item.strip().partition("=")
        parts.setdefault(name, []).append(value)
    stamp = (parts.get("t") or [""])[0]
    if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= 12):
        raise BadSignature("malformed signature")
    expected = sign(secret, body, int(stamp)).split("v1=", 1)[1].encode()
    given = [g.encode("utf-8", "surrogateescape") for g in parts.get("v1", [])]
    if not any(hmac.compare_digest(expected, g) for g in given):
        raise BadSignature("signature does not match")
    if abs(now - int(stamp)) > REPLAY_WINDOW_SECONDS:
        raise StaleSignature("signature timestamp is outside the 5 minute window")
