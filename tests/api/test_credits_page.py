"""The Credits page in a real browser (Debian's Chromium driven by Playwright), against a real
Redis and the simulated payment side: add credits → pending → the payment's webhook → completed,
with the balance changing on the page; the Refund button refunds after a confirmation that shows
the amount and the fee kept; the auto top-up form saves what the API then has; a refused refund
shows the API's reason.

Skipped with one line when no browser is available here; under CI (CI set) that skip is a failure
instead, since `make test` installs Chromium there.
"""

import os
from pathlib import Path

import pytest

from tests.api.credits_support import Credits
from tests.api.test_activity_page import ARGS, CHROMIUM, _missing, async_playwright

if _missing and os.environ.get("CI"):
    pytest.fail(f"browser tests cannot run under CI: {_missing}", pytrace=False)
pytestmark = pytest.mark.skipif(_missing is not None, reason=_missing or "")
WAIT_MS = 10_000


async def test_the_credits_page_buys_refunds_and_sets_auto_topup(
    credits_env: Credits, tmp_path: Path
) -> None:
    env = credits_env
    dialogs: list[str] = []
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            page = await browser.new_page()

            async def confirm(dialog: object) -> None:
                dialogs.append(dialog.message)  # type: ignore[attr-defined]
                await dialog.accept()  # type: ignore[attr-defined]

            page.on("dialog", confirm)
            await page.goto(str(env.client.make_url("/credits")))
            await page.get_by_label("API key", exact=True).fill(env.manager)
            await page.get_by_role("button", name="Show").click()
            await page.wait_for_function(
                "() => document.querySelector('#s-balance').textContent === '$0.00'",
                timeout=WAIT_MS,
            )
            assert env.manager not in page.url
            await page.wait_for_function(
                "() => document.querySelector('#add-quote').textContent"
                " === 'Fee $0.80 · you pay $10.80'",
                timeout=WAIT_MS,
            )

            # Add credits: a pending row, then the payment lands and the page shows it.
            await page.get_by_role("button", name="Add credits").click()
            pending = page.locator("#purchases tbody tr", has_text="pending")
            await pending.wait_for(timeout=WAIT_MS)
            checkout_id = await pending.get_attribute("data-id")
            assert checkout_id and checkout_id.startswith("chk-")
            pay_link = page.get_by_role("link", name="payment side")
            assert await pay_link.get_attribute("href") == (
                f"{env.payments.base_url}/pay/{checkout_id}"
            )
            assert await env.payments.pay(checkout_id) == 200
            await page.wait_for_function(
                "() => document.querySelector('#s-balance').textContent === '$10.00'",
                timeout=WAIT_MS,
            )
            completed = page.locator(f"#purchases tbody tr[data-checkout='{checkout_id}']")
            await completed.locator(".status", has_text="completed").wait_for(timeout=WAIT_MS)

            # The Refund button: a confirmation with the amount and the fee kept, then refunded.
            await completed.get_by_role("button", name="Refund").click()
            await page.wait_for_function(
                "() => document.querySelector('#notice').textContent.startsWith("
                "'Refunded $10.00 of the $10.00 purchase')",
                timeout=WAIT_MS,
            )
            assert dialogs and "$10.00" in dialogs[0] and "fee of $0.80 is kept" in dialogs[0]
            await completed.locator(".status", has_text="refunded").wait_for(timeout=WAIT_MS)
            assert await page.text_content("#s-balance") == "$0.00"
            for _ in range(200):  # delivered by the outbox, once
                sent = [r for r in env.payments.requests if r["type"] == "refund.requested"]
                if sent:
                    break
                await page.wait_for_timeout(25)
            assert len(sent) == 1 and sent[0]["data"]["refunded"] == "10.00"

            # Auto top-up: saved, and shown as the API has it.
            await page.get_by_label("When the balance falls below (USD)").fill("5.00")
            await page.get_by_label("buy (USD)").fill("20.00")
            await page.get_by_role("button", name="Save auto top-up").click()
            await page.wait_for_function(
                "() => document.querySelector('#topup-state').textContent"
                " === 'On: when the balance falls below $5.00, buy $20.00.'",
                timeout=WAIT_MS,
            )
            _, summary = await env.call("GET", "/api/v1/credits/summary")
            assert summary["data"]["auto_topup"]["threshold"] == "5.00"
            await page.get_by_role("button", name="Turn auto top-up off").click()
            await page.wait_for_function(
                "() => document.querySelector('#topup-state').textContent === 'Off.'",
                timeout=WAIT_MS,
            )

            # A refund the API refuses shows the API's reason.
            opened = await env.checkout("3.00")
            assert await env.payments.pay(opened["id"]) == 200
            await page.reload()  # the key stays in the tab's session storage
            later = page.locator(f"#purchases tbody tr[data-checkout='{opened['id']}']")
            await later.get_by_role("button", name="Refund").wait_for(timeout=WAIT_MS)
            await page.wait_for_function(
                "() => document.querySelector('#add-quote').textContent.startsWith('Fee')",
                timeout=WAIT_MS,
            )
            shot = os.environ.get("CREDITS_SCREENSHOT") or str(tmp_path / "credits.png")
            await page.screenshot(path=shot, full_page=True)
            env.clock.advance(25 * 3600)
            await later.get_by_role("button", name="Refund").click()
            await page.wait_for_function(
                "() => document.querySelector('#error').textContent === 'Could not refund: "
                "purchases are refundable only within 24 hours of the purchase'",
                timeout=WAIT_MS,
            )
            assert "Traceback" not in await page.content()
        finally:
            await browser.close()


async def test_the_pages_link_to_each_other(credits_env: Credits) -> None:
    c = credits_env.client
    credits = await (await c.get("/credits")).text()
    activity = await (await c.get("/activity")).text()
    assert 'href="/activity"' in credits and 'href="/credits"' in activity
    assert "http://" not in credits and "https://" not in credits
    resp = await c.get("/credits")
    assert "default-src 'self'" in resp.headers["Content-Security-Policy"]
    assert (await c.get("/credits/credits.js")).status == 200
    assert (await c.get("/credits/activity.js")).status == 404
