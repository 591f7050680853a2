"""The limits file, the policy and the decision, without Redis."""

from pathlib import Path

import pytest

from config.errors import ConfigError
from config.limits import Match, load_limits, parse_limits
from ratelimit.decision import decide
from ratelimit.policy import Policy

NOON = 1_795_780_800.0  # 2026-11-27 12:00:00 UTC
DEFAULT = Policy(load_limits(None))


def test_shipped_default_is_the_billing_rules() -> None:
    minute, day = DEFAULT.limits
    assert (minute.name, minute.unit.value, minute.tiers) == (
        "free-per-minute",
        "minute",
        ((0, 20),),
    )
    assert (day.name, day.unit.value) == ("free-per-day", "day")
    assert day.allowed_for(0) == 50
    assert day.allowed_for(9_990_000_000) == 50
    assert day.allowed_for(10_000_000_000) == 1000
    assert day.limit.scope == minute.limit.scope == "account"
    assert DEFAULT.applicable("x/y:free", "p", True) == DEFAULT.limits
    assert DEFAULT.applicable("x/paid", "p", False) == ()


@pytest.mark.parametrize(
    ("match", "model", "provider", "free", "applies"),
    [
        ("free", "a/b", "p", True, True),
        ("free", "a/b", "p", False, False),
        ("all", "a/b", "p", False, True),
        ({"model": "openai/*"}, "openai/gpt-4o", "p", False, True),
        ({"model": "openai/*"}, "anthropic/x", "p", False, False),
        ({"provider": "groq"}, "a/b", "groq", False, True),
        ({"provider": "groq"}, "a/b", "other", True, False),
    ],
)
def test_match(match: object, model: str, provider: str, free: bool, applies: bool) -> None:
    assert Match.model_validate(match).applies(model, provider, free) is applies


def test_refused_request_headers_and_upgrade_message() -> None:
    _, day = DEFAULT.limits
    decision = decide((day,), [50, 50], 1, NOON)
    assert decision.message(0) == (
        "Free model daily limit of 50 reached; add $10 of credits to unlock 1000 requests per day"
    )
    assert decision.message(2_500_000_000) == (
        "Free model daily limit of 50 reached; add $7.50 of credits to unlock 1000 requests per day"
    )
    headers = decision.headers()
    assert headers["X-RateLimit-Limit"] == "50"
    assert headers["X-RateLimit-Remaining"] == "0"
    assert headers["X-RateLimit-Reset"] == str((1_795_824_000) * 1000)  # next 00:00 UTC
    assert headers["Retry-After"] == "43200"
    assert headers["RateLimit-Policy"] == '"free-per-day";q=50;w=86400'
    assert headers["RateLimit"] == '"free-per-day";r=0;t=43200'


def test_top_tier_message_says_when_it_resets() -> None:
    minute, day = DEFAULT.limits
    refused = decide((minute,), [20, 20], 1, NOON + 15)
    assert refused.message(0) == (
        "Free model limit of 20 requests per minute reached; it resets in 45 s, "
        "at 2026-11-27 12:01 UTC"
    )
    top = decide((day,), [1000, 1000], 1, NOON)
    assert "resets in 43200 s" in top.message(10_000_000_000)


def test_admitted_headers_show_the_tightest_limit() -> None:
    minute, day = DEFAULT.limits
    decision = decide((minute, day), [3, 20, 49, 50], 0, NOON)
    assert decision.refused is None
    headers = decision.headers()
    assert headers["X-RateLimit-Limit"] == "50" and headers["X-RateLimit-Remaining"] == "1"
    assert "Retry-After" not in headers
    assert headers["RateLimit-Policy"] == (
        '"free-per-minute";q=20;w=60, "free-per-day";q=50;w=86400'
    )


def test_unlimited_override_sends_no_headers() -> None:
    _, day = DEFAULT.limits
    assert decide((day,), [70, -1], 0, NOON).headers() == {}


def test_shadow_limits_are_reported_not_enforced() -> None:
    policy = Policy(
        parse_limits(
            '[[limits]]\nname = "s"\nmatch = "all"\nunit = "minute"\nrequests = 2\nshadow = true\n',
            "f",
        )
    )
    decision = decide(policy.limits, [3, 2], 0, NOON)
    assert decision.refused is None
    assert decision.outcome(decision.states[0]) == "shadow_limited"


def test_every_problem_of_a_limits_file_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "limits.toml"
    path.write_text(
        "[[limits]]\n"
        'name = "ok"\n'
        'match = "free"\n'
        'unit = "day"\n'
        "requests = 5\n"
        "\n"
        "[[limits]]\n"
        'name = "Bad Name"\n'
        'match = "sometimes"\n'
        'unit = "week"\n'
        'tiers = [{ min_purchased = "5", requests = 1 }]\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_limits(path)
    lines = [str(p) for p in caught.value.problems]
    assert f"{path}:8: limits.1.name: String should match pattern" in lines[0]
    assert any(line.startswith(f"{path}:9: limits.1.match") for line in lines)
    assert any(line.startswith(f"{path}:10: limits.1.unit") for line in lines)


def test_tiers_and_counts_are_checked() -> None:
    bad = [
        'name = "x"\nmatch = "all"\nunit = "day"\n',
        'name = "x"\nmatch = "all"\nunit = "day"\nrequests = 1\ntiers = [{min_purchased = "0", '
        "requests = 1}]\n",
        'name = "x"\nmatch = "all"\nunit = "day"\ntiers = [{min_purchased = "0", requests = 5}, '
        '{min_purchased = "0", requests = 9}]\n',
        'name = "x"\nmatch = { model = "a/*", provider = "p" }\nunit = "day"\nrequests = 1\n',
        'name = "x"\nmatch = "all"\nunit = "day"\nrequests = -1\n',
    ]
    for body in bad:
        with pytest.raises(ConfigError):
            parse_limits("[[limits]]\n" + body, "f")
    with pytest.raises(ConfigError, match="unique"):
        parse_limits(2 * '[[limits]]\nname = "x"\nmatch = "all"\nunit = "day"\nrequests = 1\n', "f")


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ('unit = "minute"\nconcurrent = 3', "a concurrent limit has no unit"),
        ("tokens = 3", "unit is required: second, minute, hour or day"),
        ('unit = "minute"\nrequests = 3\ncount = "total"', "count goes with tokens only"),
        ('unit = "minute"\ntokens = 3\nrequests = 4', "give one of requests, tokens"),
        (
            'unit = "day"\ntiers = [{ min_purchased = "0", tokens = 5 }, '
            '{ min_purchased = "1", requests = 50 }]',
            "tiers must all count the same",
        ),
        (
            'scope = "client"\nmatch = "invalid_key"\nunit = "minute"\ntokens = 5',
            'scope "client" counts requests only',
        ),
        ('unit = "minute"\ntokens = 5\ncount = "output"', "limits.0.count"),
    ],
)
def test_token_and_concurrency_limits_refuse_what_does_not_fit(body: str, problem: str) -> None:
    text = '[[limits]]\nname = "x"\n' + ("" if "match" in body else 'match = "all"\n') + body
    with pytest.raises(ConfigError) as caught:
        parse_limits(text + "\n", "limits.toml")
    assert problem in str(caught.value)


def test_token_and_concurrency_headers() -> None:
    policy = Policy(
        parse_limits(
            '[[limits]]\nname = "tpm"\nmatch = "all"\nunit = "minute"\ntokens = 1000\n'
            '[[limits]]\nname = "streams"\nscope = "key"\nmatch = "all"\nconcurrent = 2\n',
            "limits.toml",
        )
    )
    tpm, streams = policy.limits
    assert (tpm.kind, tpm.window.value, streams.kind, streams.unit) == (
        "tokens",
        "minute",
        "concurrent",
        None,
    )
    admitted = decide(policy.limits, [400, 1000, 1, 2], 0, NOON + 15, (150, 1), ("acct", "k" * 64))
    headers = admitted.headers()
    assert headers["x-ratelimit-limit-tokens"] == "1000"
    assert headers["x-ratelimit-remaining-tokens"] == "600"
    assert headers["x-ratelimit-reset-tokens"] == "45s"
    assert "X-RateLimit-Limit" not in headers  # those are about request limits
    assert headers["RateLimit-Policy"] == (
        '"tpm";q=1000;w=60;qu="tokens";pk=:YWNjdA==:, '
        '"streams";q=2;qu="concurrent-requests";pk=:a2tra2tra2tra2tra2tra2tra2tra2tr:'
    )
    assert headers["RateLimit"] == '"tpm";r=600;t=45;pk=:YWNjdA==:'
    refused = decide(policy.limits, [400, 1000, 2, 2], 2, NOON + 15, (150, 1), ("acct", "k" * 64))
    headers = refused.headers()
    assert headers["Retry-After"] == "1"
    assert headers["RateLimit"] == '"streams";r=0;pk=:a2tra2tra2tra2tra2tra2tra2tra2tr:'
    assert refused.message(0) == (
        "Rate limit 'streams' of 2 requests in flight at once reached: 2 requests of this limit "
        "are in flight; retry when one of them ends"
    )
    # A day's reset, as OpenAI writes it.
    day = decide(
        Policy(
            parse_limits(
                '[[limits]]\nname = "tpd"\nmatch = "all"\nunit = "day"\ntokens = 10\n', "f"
            )
        ).limits,
        [1, 10],
        0,
        NOON + 15,
        (1,),
    )
    assert day.headers()["x-ratelimit-reset-tokens"] == "11h59m45s"
