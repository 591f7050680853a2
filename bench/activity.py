"""`make bench-activity`: seed one account with usage records through the real settlement script,
then time what the Activity view asks for: a 30-day daily chart (from the rollups) and the newest
page of 50 generations filtered by model, through the gateway's HTTP API.

    python -m bench.activity [--records 1000000] [--days 60] [--repeat 30]
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web
from redis.asyncio import Redis

from bench import new_event_loop
from bench.report import machine_info, write_json
from config.settings import Settings
from gateway.app import create_app
from gateway.runtime.redis_server import RedisServer, free_port
from gateway.state import SERVICES
from metering.usage import UsageRecord, new_generation_id

MODELS = (
    ("openai/gpt-4o-mini", "openai", 150, 600),
    ("anthropic/claude-haiku", "anthropic", 250, 1250),
    ("meta/llama-3.1-8b:free", "groq", 0, 0),
)
BATCH = 2000


def _record(account_id: str, key_hash: str, i: int, at: float) -> UsageRecord:
    model, provider, prompt_price, completion_price = MODELS[i % 3 if i % 10 else 0]
    prompt, completion = 200 + i % 700, 20 + i % 300
    return UsageRecord(
        id=new_generation_id(account_id),
        account_id=account_id,
        key_hash=key_hash,
        model=model,
        provider_name=provider,
        upstream_model=model.split("/")[1],
        tokens_prompt=prompt,
        tokens_completion=completion,
        native_tokens_cached=0,
        native_tokens_reasoning=0,
        cost=prompt * prompt_price + completion * completion_price,
        latency_ms=300,
        generation_time_ms=900,
        streamed=bool(i % 2),
        cancelled=False,
        finish_reason="stop",
        status=200,
        usage_source="provider",
        created_at="",
        created_at_ms=int(at * 1000),
    )


async def seed(app: web.Application, records: int, days: int, now: float) -> tuple[str, str]:
    services = app[SERVICES]
    account = await services.accounts.create_account("activity-bench", 10**15, now - days * 86_400)
    secret, key = await services.accounts.create_key(account.id, "bench", now)
    start = now - days * 86_400
    step = days * 86_400 / records
    done = 0
    started = time.monotonic()
    while done < records:
        size = min(BATCH, records - done)
        batch = []
        for i in range(done, done + size):
            at = start + i * step
            batch.append((_record(account.id, key.hash, i, at), at))
        await services.metering.settle_many(batch)
        done += size
        if done % 100_000 == 0 or done == records:
            rate = done / (time.monotonic() - started)
            print(f"[bench-activity] seeded {done} records ({rate:.0f}/s)", flush=True)
    await services.rollup_fold.fold(account.id)  # what the background fold would do meanwhile
    return account.id, secret


async def timed(session: aiohttp.ClientSession, url: str, key: str, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        async with session.get(url, headers={"Authorization": f"Bearer {key}"}) as resp:
            assert resp.status == 200, await resp.text()
            await resp.read()
        times.append((time.perf_counter() - t) * 1000)
    return times


async def main_async(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="gw-bench-activity-") as tmp:
        redis = RedisServer(Path(tmp), port=free_port(), appendonly=False).start()
        try:
            settings = Settings(redis_url=redis.url, usage_record_days=max(args.days + 1, 90))
            app = create_app(settings)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            port = free_port()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            try:
                now = time.time()
                account_id, key = await seed(app, args.records, args.days, now)
                client = Redis.from_url(redis.url, decode_responses=True)
                memory = (await client.info("memory"))["used_memory_human"]
                server_info = await client.info("server")
                await client.aclose()
                base = f"http://127.0.0.1:{port}"
                async with aiohttp.ClientSession() as session:
                    chart = await timed(
                        session,
                        f"{base}/api/v1/activity?granularity=day&group_by=model",
                        key,
                        args.repeat,
                    )
                    page = await timed(
                        session,
                        f"{base}/api/v1/generations?limit=50&model={MODELS[1][0]}",
                        key,
                        args.repeat,
                    )
            finally:
                await runner.cleanup()
        finally:
            redis.stop()
    result = {
        "records": args.records,
        "days": args.days,
        "redis_memory": memory,
        "chart_30_days_ms": {"p50": statistics.median(chart), "max": max(chart)},
        "generations_page_by_model_ms": {"p50": statistics.median(page), "max": max(page)},
        "machine": machine_info(server_info, None),
        "account": account_id,
    }
    print(
        f"\n== Activity with {args.records} usage records over {args.days} days (Redis {memory}) =="
    )
    print(
        f"  30-day daily chart, grouped by model:   p50 {result['chart_30_days_ms']['p50']:.2f}"
        f" ms  max {result['chart_30_days_ms']['max']:.2f} ms   (aim: under 50 ms)"
    )
    print(
        f"  newest 50 generations of one model:     p50 "
        f"{result['generations_page_by_model_ms']['p50']:.2f} ms  max "
        f"{result['generations_page_by_model_ms']['max']:.2f} ms   (aim: under 20 ms)"
    )
    path = write_json(result, time.strftime("%Y%m%d-%H%M%S") + "-activity")
    print(f"results written to {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.activity", description=__doc__)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args(argv)
    loop = new_event_loop()
    try:
        return loop.run_until_complete(main_async(args))
    finally:
        loop.close()


if __name__ == "__main__":
    sys.exit(main())
