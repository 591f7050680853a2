"""The Activity page in a real browser (Debian's Chromium driven by Playwright): it loads, its
totals match the API, a filter changes them, and its CSV download matches the API.

Skipped with one line when no browser is available here; under CI (CI set) that skip is a
failure instead, since `make test` installs Chromium there.
"""

import csv
import io
import os
import shutil
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app
from tests.support import ThreadedServer, bearer, chat, make_settings, new_account

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]

try:
    from playwright.async_api import Page, async_playwright
except ImportError:  # pragma: no cover - depends on the machine
    async_playwright = None  # type: ignore[assignment]

_missing = (
    None
    if CHROMIUM and async_playwright
    else ("no Chromium or Playwright here (make test installs them with apt-get and pip)")
)
if _missing and os.environ.get("CI"):
    pytest.fail(f"browser tests cannot run under CI: {_missing}", pytrace=False)
pytestmark = pytest.mark.skipif(_missing is not None, reason=_missing or "")


@pytest.fixture
async def seeded(redis_url: str, provider: ThreadedServer) -> AsyncIterator[tuple[TestClient, str]]:
    app = create_app(make_settings(redis_url, provider.url))
    async with TestClient(TestServer(app, host="127.0.0.1")) as c:
        _, key = await new_account(c, purchase="5.00")
        for model, n in (("test/paid", 3), ("test/fallback", 2), ("test/free:free", 1)):
            for _ in range(n):
                resp = await c.post(
                    "/api/v1/chat/completions", json=chat(model), headers=bearer(key)
                )
                assert resp.status == 200
        yield c, key


async def _api_totals(c: TestClient, key: str, extra: str = "") -> dict[str, Any]:
    resp = await c.get(f"/api/v1/activity?granularity=day{extra}", headers=bearer(key))
    totals: dict[str, Any] = (await resp.json())["data"]["totals"]
    return totals


async def _wait_text(page: "Page", selector: str, expected: str) -> None:
    await page.wait_for_function(
        "([s, e]) => document.querySelector(s).textContent === e",
        arg=[selector, expected],
        timeout=10_000,
    )


async def test_the_page_shows_what_the_api_says(
    seeded: tuple[TestClient, str], tmp_path: Path
) -> None:
    c, key = seeded
    base = str(c.make_url("/activity"))
    all_totals = await _api_totals(c, key)
    paid_totals = await _api_totals(c, key, "&model=test/paid")
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            context = await browser.new_context(accept_downloads=True)
            page = await context.new_page()
            await page.goto(base)
            await page.get_by_label("API key", exact=True).fill(key)
            await page.get_by_role("button", name="Show").click()
            await _wait_text(page, "#t-requests", str(all_totals["requests"]))
            assert await page.text_content("#t-spend") == "$" + all_totals["spend"]
            assert key not in page.url  # the key is never in a URL
            # The recent generations come from a second call, after the totals are shown.
            await page.wait_for_function(
                "() => document.querySelectorAll('#recent tbody tr').length === 6", timeout=10_000
            )
            shot = os.environ.get("ACTIVITY_SCREENSHOT") or str(tmp_path / "activity.png")
            await page.screenshot(path=shot, full_page=True)

            await page.get_by_label("Model").select_option("test/paid")
            await _wait_text(page, "#t-requests", str(paid_totals["requests"]))
            assert await page.text_content("#t-spend") == "$" + paid_totals["spend"]

            async with page.expect_download() as download_info:
                await page.get_by_role("button", name="Download CSV").click()
            download = await download_info.value
            saved = tmp_path / "activity.csv"
            await download.save_as(saved)
            rows_csv = list(csv.DictReader(io.StringIO(saved.read_text())))
            assert sum(Decimal(r["spend"]) for r in rows_csv) == Decimal(paid_totals["spend"])
            assert sum(int(r["requests"]) for r in rows_csv) == paid_totals["requests"]
        finally:
            await browser.close()


async def test_the_page_needs_no_network_beyond_the_gateway(
    seeded: tuple[TestClient, str],
) -> None:
    c, _ = seeded
    html = await (await c.get("/activity")).text()
    assert "http://" not in html and "https://" not in html
    csp = (await c.get("/activity")).headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp
    assert (await c.get("/activity/nope.js")).status == 404
