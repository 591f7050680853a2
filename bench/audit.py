"""Hold the gateway's books against what its clients were told, through its own APIs only.

After a fault or a soak run: the account's balance is granted + purchased - expired - usage, nothing
stays reserved, the ledger's entries sum to the balance, the usage records sum to the usage, no
generation is recorded twice, and every answer a client received has its record, at the cost the
client was told.
"""

import asyncio
import csv
import io
from dataclasses import dataclass
from decimal import Decimal

import aiohttp

from bench.traffic import Outcome

NANOS = Decimal(1_000_000_000)
LEASES_BACK_SECONDS = 3.0
NOTHING_GENERATED = frozenset({402, 408, 429, 502, 503})  # answers that must cost nothing


def nanos(usd: str) -> int:
    return int(Decimal(usd) * NANOS)


@dataclass(frozen=True, slots=True)
class Books:
    account: dict[str, object]
    ledger_sum: int
    record_costs: dict[str, int]  # generation id -> cost in nanodollars
    duplicate_records: list[str]

    def money(self, name: str) -> int:
        return nanos(str(self.account[name]))


async def read_books(base_url: str, admin_token: str, account_id: str, key: str) -> Books:
    """The books once the account is quiet: a busy account's leases go back within half a
    second of its last request (metering/leasing/leases.py), so the account is read until nothing is
    reserved, for up to LEASES_BACK_SECONDS; what is still reserved then is a problem."""
    admin = {"Authorization": f"Bearer {admin_token}"}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        for _ in range(int(LEASES_BACK_SECONDS / 0.05)):
            url = f"{base_url}/admin/v1/accounts/{account_id}"
            async with session.get(url, headers=admin) as r:
                r.raise_for_status()
                account = await r.json()
            if nanos(str(account["reserved"])) == 0:
                break
            await asyncio.sleep(0.05)
        ledger_sum, cursor = 0, ""
        for _ in range(10_000):
            url = f"{base_url}/admin/v1/accounts/{account_id}/ledger?limit=1000&cursor={cursor}"
            async with session.get(url, headers=admin) as r:
                r.raise_for_status()
                page = await r.json()
            ledger_sum += sum(nanos(entry["amount"]) for entry in page["data"])
            cursor = page["next_cursor"]
            if not cursor:
                break
        url = f"{base_url}/api/v1/generations.csv"
        async with session.get(url, headers={"Authorization": f"Bearer {key}"}) as r:
            r.raise_for_status()
            text = await r.text()
    costs: dict[str, int] = {}
    duplicates: list[str] = []
    for row in csv.DictReader(io.StringIO(text)):
        if row["id"] in costs:
            duplicates.append(row["id"])
        costs[row["id"]] = nanos(row["total_cost_usd"])
    return Books(account, ledger_sum, costs, duplicates)


def problems(books: Books, outcomes: list[Outcome]) -> list[str]:
    """Every way the books disagree with themselves or with the clients; empty when they agree."""
    found: list[str] = []
    balance = books.money("balance")
    expected = (
        books.money("granted")
        + books.money("lifetime_purchases")
        - books.money("expired")
        - books.money("total_usage")
    )
    if balance != expected:
        found.append(f"balance {balance} != granted + purchased - expired - usage = {expected}")
    if books.money("reserved") != 0:
        found.append(f"still reserved: {books.account['reserved']}")
    if books.ledger_sum != balance:
        found.append(f"ledger entries sum to {books.ledger_sum}, balance is {balance}")
    recorded = sum(books.record_costs.values())
    if recorded != books.money("total_usage"):
        found.append(f"usage records sum to {recorded}, usage is {books.money('total_usage')}")
    if books.duplicate_records:
        found.append(f"recorded twice: {books.duplicate_records[:5]}")
    missing = [
        o.generation_id
        for o in outcomes
        if o.status == 200 and o.generation_id and o.generation_id not in books.record_costs
    ]
    if missing:
        found.append(f"{len(missing)} answered requests have no usage record: {missing[:5]}")
    mispriced = [
        (o.generation_id, o.cost_nanos, books.record_costs[o.generation_id])
        for o in outcomes
        if o.generation_id in books.record_costs
        and o.cost_nanos is not None
        and o.cost_nanos != books.record_costs[o.generation_id]
    ]
    if mispriced:
        found.append(f"{len(mispriced)} clients were told another cost: {mispriced[:5]}")
    charged_for_nothing = [
        (o.status, o.generation_id, books.record_costs[o.generation_id])
        for o in outcomes
        if o.status in NOTHING_GENERATED
        and o.generation_id in books.record_costs
        and books.record_costs[o.generation_id] != 0
    ]
    if charged_for_nothing:
        found.append(f"failed requests were charged: {charged_for_nothing[:5]}")
    return found
