"""The shipped dashboard and alert rules, checked with the real tools, and every metric they use
exported by the gateway."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

DEPLOY = Path(__file__).parent.parent.parent / "deploy"
PROMTOOL = shutil.which("promtool")


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (make test installs it)")
def test_alert_rules_pass_promtool() -> None:
    assert PROMTOOL is not None
    out = subprocess.run(
        [PROMTOOL, "check", "rules", str(DEPLOY / "prometheus" / "alerts.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 6 rules found" in out.stdout


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (make test installs it)")
async def test_the_scrape_passes_promtools_lint(client: TestClient) -> None:
    assert PROMTOOL is not None
    scrape = await (await client.get("/metrics")).text()
    out = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=scrape, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr


async def test_dashboard_and_rules_use_only_exported_metrics(client: TestClient) -> None:
    scrape = await (await client.get("/metrics")).text()
    exported = {line.split()[2] for line in scrape.splitlines() if line.startswith("# TYPE")}
    dashboard = json.loads((DEPLOY / "grafana" / "gateway.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs.append((DEPLOY / "prometheus" / "alerts.yml").read_text())
    used = {m for e in exprs for m in re.findall(r"\b(gateway_[a-z_]+)", e)}
    base = {re.sub(r"_(bucket|count|sum|total)$", "", m) for m in used}
    missing = {
        m
        for m in base
        if m not in exported
        and m + "_total" not in exported
        and re.sub(r"_total$", "", m) not in exported
    }
    assert not missing, missing
    assert len(dashboard["panels"]) >= 10
