"""The books audit the fault tests and the soak rely on (bench/audit.py) finds each kind of
disagreement: were it blind, those tests could not fail."""

from bench.audit import Books, problems
from bench.traffic import Outcome

GOOD = {
    "balance": "9.99",
    "granted": "0.00",
    "lifetime_purchases": "10.00",
    "expired": "0.00",
    "total_usage": "0.01",
    "reserved": "0.00",
}
ANSWERED = Outcome(200, "m", False, "gen-a", 6_000_000)
FAILED = Outcome(502, "m", False, "gen-b")


def books(**changes: object) -> Books:
    fields: dict[str, object] = {
        "account": GOOD,
        "ledger_sum": 9_990_000_000,
        "record_costs": {"gen-a": 6_000_000, "gen-b": 0, "gen-c": 4_000_000},
        "duplicate_records": [],
    }
    fields.update(changes)
    return Books(**fields)  # type: ignore[arg-type]


def test_books_that_agree_have_no_problem() -> None:
    assert problems(books(), [ANSWERED, FAILED]) == []


def test_each_disagreement_is_found() -> None:
    cases = {
        "balance": books(account={**GOOD, "balance": "9.98"}),
        "still reserved": books(account={**GOOD, "reserved": "0.000001"}),
        "ledger": books(ledger_sum=9_980_000_000),
        "usage records": books(record_costs={"gen-a": 6_000_000, "gen-b": 0}),
        "recorded twice": books(duplicate_records=["gen-a"]),
        "no usage record": books(record_costs={"gen-b": 0, "gen-c": 10_000_000}),
        "another cost": books(record_costs={"gen-a": 5_000_000, "gen-b": 0, "gen-c": 5_000_000}),
        "failed requests were charged": books(
            record_costs={"gen-a": 6_000_000, "gen-b": 1, "gen-c": 3_999_999}
        ),
    }
    for expected, bad in cases.items():
        found = problems(bad, [ANSWERED, FAILED])
        assert any(expected in p for p in found), (expected, found)
