"""`gateway demo`: everything needed to try the gateway on a machine with nothing else.

An embedded Redis in a fresh temporary directory, a SIMULATED provider on loopback (no real model
is called, and every output says so) that serves every API the gateway meters (chat, completions,
embeddings, OpenAI's Responses, Anthropic's Messages), a SIMULATED payment side (no money moves)
behind the Credits page's checkouts, refunds and auto top-up, a demo account with $10 of
purchased credits, a key and a management key; then a ready curl line for each API.
"""

import asyncio
import secrets
import shutil
import sys
import tempfile
from decimal import Decimal
from pathlib import Path

from pydantic import SecretStr

from config.catalog import ModelConfig, Pricing, ProviderConfig
from config.settings import Settings
from gateway.app import create_app
from gateway.observability.logs import configure as configure_logging
from gateway.runtime.redis_server import RedisBinaryMissing, RedisServer, RedisStartFailed
from gateway.runtime.server import install_uvloop, start_site, wait_for_stop_signal
from gateway.runtime.simulated_payments import SimulatedPayments
from gateway.runtime.simulated_provider import create_simulated_provider
from gateway.state import CLOCK, SERVICES
from metering.money import fee_nanos

DEMO_PAID_MODEL = "simulated/gpt-4o-mini"
DEMO_FREE_MODEL = "simulated/llama-3.1-8b-instruct:free"
DEMO_EMBEDDING_MODEL = "simulated/text-embedding-3-small"
DEMO_CLAUDE_MODEL = "simulated/claude-haiku"


def demo_catalog(provider_url: str) -> tuple[list[ProviderConfig], list[ModelConfig]]:
    provider = ProviderConfig(
        name="simulated",
        base_url=provider_url,
        simulated=True,
        apis=("chat", "completions", "embeddings", "responses", "messages"),
    )
    models = [
        ModelConfig(
            id=DEMO_PAID_MODEL,
            name="Simulated GPT-4o mini (no real model)",
            provider="simulated",
            upstream_model="sim-gpt-4o-mini",
            max_output_tokens=16384,
            context_length=128000,
            pricing=Pricing(prompt=Decimal("0.00000015"), completion=Decimal("0.0000006")),
        ),
        ModelConfig(
            id=DEMO_FREE_MODEL,
            name="Simulated Llama 3.1 8B, free (no real model)",
            provider="simulated",
            upstream_model="sim-llama",
            max_output_tokens=4096,
            context_length=131072,
        ),
        ModelConfig(
            id="simulated/slow-stream",
            name="Simulated slow stream (no real model)",
            provider="simulated",
            upstream_model="sim-slowstream",
            max_output_tokens=1000,
            pricing=Pricing(prompt=Decimal("0.000001"), completion=Decimal("0.000002")),
        ),
        ModelConfig(
            id=DEMO_EMBEDDING_MODEL,
            name="Simulated text embedding (no real model)",
            provider="simulated",
            upstream_model="sim-embedding",
            context_length=8192,
            pricing=Pricing(prompt=Decimal("0.00000002"), completion=Decimal("0")),
        ),
        ModelConfig(
            id=DEMO_CLAUDE_MODEL,
            name="Simulated Claude Haiku, with prompt caching (no real model)",
            provider="simulated",
            upstream_model="sim-cache",
            max_output_tokens=8192,
            context_length=200000,
            pricing=Pricing(
                prompt=Decimal("0.0000008"),
                completion=Decimal("0.000004"),
                input_cache_read=Decimal("0.00000008"),
                input_cache_write=Decimal("0.000001"),
            ),
        ),
    ]
    return [provider], models


def run_demo(host: str, port: int) -> int:
    configure_logging("INFO", "auto")  # readable lines in a terminal, JSON when piped
    data_dir = Path(tempfile.mkdtemp(prefix="gateway-demo-"))
    try:
        redis = RedisServer(data_dir).start()
    except (RedisBinaryMissing, RedisStartFailed) as exc:
        print(f"gateway demo: {exc}", file=sys.stderr)
        shutil.rmtree(data_dir, ignore_errors=True)
        return 1
    install_uvloop()
    try:
        asyncio.run(_demo(host, port, redis.url, data_dir))
    except OSError as exc:
        print(
            f"gateway demo: cannot listen on {host}:{port}: {exc.strerror}; try --port",
            file=sys.stderr,
        )
        return 1
    finally:
        redis.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    return 0


async def _demo(host: str, port: int, redis_url: str, data_dir: Path) -> None:
    sim_runner, sim_port = await start_site(create_simulated_provider(), "127.0.0.1", 0)
    payments = SimulatedPayments(secrets.token_hex(16), secrets.token_hex(16))
    pay_runner, pay_port = await start_site(payments.app(), "127.0.0.1", 0)
    payments.base_url = f"http://127.0.0.1:{pay_port}"
    providers, models = demo_catalog(f"http://127.0.0.1:{sim_port}/v1")
    settings = Settings(
        redis_url=redis_url,
        data_dir=data_dir,
        host=host,
        port=port,
        providers=providers,
        models=models,
        payments_webhook_secret=SecretStr(payments.webhook_secret),
        payments_request_url=f"{payments.base_url}/requests",
        payments_request_secret=SecretStr(payments.request_secret),
        topup_webhook_url=f"{payments.base_url}/requests",
        topup_webhook_secret=SecretStr(payments.request_secret),
    )
    app = create_app(settings)
    runner, bound = await start_site(app, host, port)
    payments.gateway_url = f"http://{_loopback(host)}:{bound}"
    try:
        services, clock = app[SERVICES], app[CLOCK]
        account = await services.accounts.create_account("demo", 0, clock.now())
        amount = Decimal("10.00")
        fee = fee_nanos(amount, settings.card_fee_percent, settings.card_fee_minimum)
        await services.accounts.purchase(
            account.id, amount, fee, "card", "demo-initial", clock.now()
        )
        secret, _ = await services.accounts.create_key(account.id, "demo key", clock.now())
        manager, _ = await services.accounts.create_key(
            account.id, "demo management key", clock.now(), management=True
        )
        base = f"http://{host}:{bound}"
        print(_banner(base, sim_port, secret, manager), flush=True)
        await wait_for_stop_signal()
    finally:
        await runner.cleanup()
        await pay_runner.cleanup()
        await sim_runner.cleanup()


def _loopback(host: str) -> str:
    """Where the payment side reaches the gateway listening on `host`."""
    if host in ("0.0.0.0", "", "localhost"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def _banner(base: str, sim_port: int, secret: str, manager: str) -> str:
    auth = f"-H 'Authorization: Bearer {secret}' -H 'Content-Type: application/json'"
    hello = '[{"role": "user", "content": "Hello!"}]'
    return f"""
Gateway demo is running at {base}
  Provider: SIMULATED (a built-in test provider on 127.0.0.1:{sim_port}; no real model is called)
  Models:   {DEMO_PAID_MODEL} (paid, listed prices), {DEMO_FREE_MODEL} (free),
            {DEMO_EMBEDDING_MODEL}, {DEMO_CLAUDE_MODEL} (prompt caching)
  Payments: SIMULATED (checkouts, refunds and auto top-up; no money moves)
  Account:  "demo", with $10.00 of purchased credits
  API key:  {secret}
  Management key: {manager}

Try it:
curl -s {base}/api/v1/chat/completions \\
  {auth} \\
  -d '{{"model": "{DEMO_PAID_MODEL}", "messages": {hello}}}'

  Embeddings: curl -s {base}/api/v1/embeddings {auth} \\
                -d '{{"model": "{DEMO_EMBEDDING_MODEL}", "input": ["a", "b"]}}'
  Responses:  curl -s {base}/api/v1/responses {auth} \\
                -d '{{"model": "{DEMO_PAID_MODEL}", "input": "Hello!"}}'
  Messages:   curl -s {base}/v1/messages -H 'x-api-key: {secret}' \\
                -H 'anthropic-version: 2023-06-01' -H 'Content-Type: application/json' \\
                -d '{{"model": "{DEMO_CLAUDE_MODEL}", "max_tokens": 100, "messages": {hello}}}'
  Credits:    curl -s {base}/api/v1/credits -H 'Authorization: Bearer {secret}'
  Models:     curl -s {base}/api/v1/models
  Activity:   {base}/activity (paste the API key there)
  Credits:    {base}/credits (paste the management key there: add credits, pay them on the
              simulated payment side, refund them, set auto top-up)

Stop it with Ctrl-C (SIGINT) or SIGTERM; the demo's data is temporary and removed on exit.
"""
