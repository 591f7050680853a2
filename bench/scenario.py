"""What the benchmark sends and how it sets the gateway up: the gateway's TOML, the admin calls
that make an account and key, the request bodies. Nothing here is timed."""

import textwrap
import urllib.request
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import orjson

PAID_MODEL = "bench/paid"
HOLD_MODEL = "bench/hold"  # a stream held open, one event a second (bench.open_streams)
TICK_MODEL = "bench/tick"  # a stream of ten events a second (bench.open_streams --rate 10)
TICK_UPSTREAM = "sim-tick-100"
UPSTREAM_MODEL = "sim-gpt"  # the simulated provider's normal, fast answer
MESSAGES = [{"role": "user", "content": "Hello there"}]


def chat_body(model: str, **extra: Any) -> bytes:
    return orjson.dumps({"model": model, "messages": MESSAGES, **extra})


# The other APIs' runs (`make bench` measures each against the bare proxy on the same path):
# a small batch of embeddings (RAG's shape) and a Responses call as the Agents SDK sends one.
API_BODIES = {
    "embeddings": lambda model: orjson.dumps(
        {"model": model, "input": ["The quick brown fox", "jumps over the lazy dog"]}
    ),
    "responses": lambda model: orjson.dumps(
        {"model": model, "input": "Hello there", "instructions": "Be brief."}
    ),
}


def gateway_toml(path: Path, mock_url: str, key_env: str = "", *, every_api: bool = False) -> Path:
    """One provider (the mock) and one paid model, priced like a small real model; with
    `key_env`, the mock's key is read from that variable (so there is a secret to redact); with
    `every_api`, the mock serves the Responses API too (a file older builds would refuse, so
    bench.compare leaves it out)."""
    key_line = f'api_key_env = "{key_env}"' if key_env else ""
    apis_line = 'apis = ["chat", "completions", "embeddings", "responses"]' if every_api else ""
    hold = (
        f'[[models]]\nid = "{HOLD_MODEL}"\nprovider = "mock"\nupstream_model = "sim-hold"\n'
        'max_output_tokens = 120\n[models.pricing]\nprompt = "0.00000015"\n'
        'completion = "0.0000006"\n'
        f'[[models]]\nid = "{TICK_MODEL}"\nprovider = "mock"\nupstream_model = "{TICK_UPSTREAM}"\n'
        'max_output_tokens = 3000\n[models.pricing]\nprompt = "0.00000015"\n'
        'completion = "0.0000006"\n'
        if every_api
        else ""
    )
    path.write_text(
        textwrap.dedent(f"""\
        [[providers]]
        name = "mock"
        base_url = "{mock_url}/v1"
        {apis_line}
        {key_line}

        [[models]]
        id = "{PAID_MODEL}"
        provider = "mock"
        upstream_model = "{UPSTREAM_MODEL}"
        [models.pricing]
        prompt = "0.00000015"
        completion = "0.0000006"
        """)
        + hold
    )
    return path


LIMITS = """\
# The shipped free-model rules, and a limit on every model that every bench request is
# checked and counted against (far above what a run can reach): admission does the limit work.
[[limits]]
name = "free-per-minute"
match = "free"
unit = "minute"
requests = 20

[[limits]]
name = "free-per-day"
match = "free"
unit = "day"
tiers = [{ min_purchased = "0", requests = 50 }, { min_purchased = "10", requests = 1000 }]

[[limits]]
name = "bench-per-key"
scope = "key"
match = "all"
unit = "minute"
requests = 100000000
"""


FREE_LIMITS_ONLY = LIMITS[: LIMITS.index('[[limits]]\nname = "bench-per-key"')]

TOKEN_LIMITS = """
# --token-limits: tokens per minute on every model too (far above what a run can reach): each
# request's worst case is reserved (from a busy account's lease, as its request count is), and
# trued up at settlement.
[[limits]]
name = "bench-tokens-per-key"
scope = "key"
match = "all"
unit = "minute"
tokens = 1000000000000
"""

IN_FLIGHT_LIMITS = """
# --in-flight-limits: requests in flight on every model too: each request's place is held in
# Redis, so a busy account's requests are not leased.
[[limits]]
name = "bench-in-flight"
scope = "account"
match = "all"
concurrent = 100000
"""


def limits_toml(
    path: Path, *, paid_limit: bool = True, token_limits: bool = False, in_flight: bool = False
) -> Path:
    """The bench's limits; without the limit on every model, a busy account's paid requests are
    admitted from leases (metering/leasing/leases.py)."""
    text = LIMITS if paid_limit else FREE_LIMITS_ONLY
    text += TOKEN_LIMITS if token_limits else ""
    path.write_text(text + (IN_FLIGHT_LIMITS if in_flight else ""))
    return path


def admin_call(url: str, token: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """A blocking JSON call to the admin API: GET without a body, POST with one."""
    data = None if body is None else orjson.dumps(body)
    request = urllib.request.Request(url, data=data, method="GET" if data is None else "POST")
    request.add_header("Authorization", f"Bearer {token}")
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=10) as resp:
        result: dict[str, Any] = orjson.loads(resp.read())
        return result


def create_account_and_key(gateway_url: str, token: str) -> tuple[str, str]:
    """(account id, API key) with a grant large enough for any run."""
    account = admin_call(
        gateway_url + "/admin/v1/accounts", token, {"name": "bench", "grant": "100000"}
    )
    key = admin_call(
        f"{gateway_url}/admin/v1/accounts/{account['id']}/keys", token, {"name": "bench"}
    )
    return account["id"], key["key"]


async def one_request_cost(url: str, body: bytes, headers: dict[str, str]) -> Decimal:
    """What the gateway charges for one bench request, from its own `usage.cost`."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers=headers) as resp,
    ):
        data = await resp.json()
    return Decimal(str(data["usage"]["cost"]))
