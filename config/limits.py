"""The rate-limit file (TOML, `GATEWAY_LIMITS_FILE`): named limits an operator edits without code.

```toml
[[limits]]
name = "free-daily"                 # unique; shows in 429 bodies, headers and metrics
description = "Free model daily limit"
scope = "account"                   # account (all its keys together) or key
match = "free"                      # "free", "all", { model = "openai/*" } or { provider = "x" }
unit = "day"                        # second, minute, hour or day: fixed UTC windows
tiers = [                           # the count chosen by the account's lifetime purchases
  { min_purchased = "0", requests = 50 },
  { min_purchased = "10", requests = 1000 },
]
# requests = 20                     # instead of tiers: one count for everybody
# shadow = true                     # counted and reported, never refused
```

Beside `requests`, a limit may count `tokens` per window (`count = "total" | "prompt" |
"completion"`, total by default), or `concurrent` requests in flight at once (no `unit`). Tiers
then give `tokens = N` or `concurrent = N` in place of `requests = N`.
"""

import fnmatch
import itertools
import re
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from config.catalog import PriceUSD
from config.errors import ConfigError, ConfigProblem
from config.locate import line_of

Unit = Literal["second", "minute", "hour", "day"]
Kind = Literal["requests", "tokens", "concurrent"]
TokenCount = Literal["total", "prompt", "completion"]
MAX_REQUESTS = 10**9
MAX_TOKENS = 10**15
KINDS: tuple[Kind, ...] = ("requests", "tokens", "concurrent")


class Tier(BaseModel):
    """One tier: from `min_purchased` on, the limit's count (requests, tokens or concurrent)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_purchased: PriceUSD
    requests: int | None = Field(default=None, ge=0, le=MAX_REQUESTS)
    tokens: int | None = Field(default=None, ge=0, le=MAX_TOKENS)
    concurrent: int | None = Field(default=None, ge=0, le=MAX_REQUESTS)

    @model_validator(mode="after")
    def _one_count(self) -> "Tier":
        if len(_counts_given(self)) != 1:
            raise ValueError("give one of requests, tokens or concurrent")
        return self

    @property
    def kind(self) -> Kind:
        return _counts_given(self)[0]

    @property
    def amount(self) -> int:
        value = getattr(self, self.kind)
        assert isinstance(value, int)
        return value


def _counts_given(item: BaseModel) -> list[Kind]:
    return [kind for kind in KINDS if getattr(item, kind) is not None]


class Match(BaseModel):
    """Which requests a limit counts. Exactly one of the fields is set."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    free: bool | None = None
    all: bool | None = None
    invalid_key: bool | None = None  # requests whose API key does not exist (scope "client")
    model: str | None = Field(default=None, min_length=1, max_length=200)
    provider: str | None = Field(default=None, min_length=1, max_length=100)

    @model_validator(mode="before")
    @classmethod
    def _from_word(cls, value: Any) -> Any:
        if value == "free":
            return {"free": True}
        if value == "invalid_key":
            return {"invalid_key": True}
        if value == "all":
            return {"all": True}
        if isinstance(value, str):
            raise ValueError(
                'must be "free", "all", "invalid_key", { model = "glob" } or { provider = "name" }'
            )
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> "Match":
        chosen = [
            n for n in ("free", "all", "model", "provider", "invalid_key") if getattr(self, n)
        ]
        if len(chosen) != 1:
            raise ValueError("give exactly one of free, all, model, provider or invalid_key")
        return self

    def applies(self, model_id: str, provider: str, is_free: bool) -> bool:
        if self.invalid_key:
            return False  # counted at authentication, not at admission
        if self.all:
            return True
        if self.free:
            return is_free
        if self.model is not None:
            return fnmatch.fnmatchcase(model_id, self.model)
        return provider == self.provider


class Limit(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_\-]{0,62}$")
    description: str | None = Field(default=None, max_length=200)
    scope: Literal["account", "key", "client"] = "account"
    match: Match
    unit: Unit | None = None  # none for `concurrent`: it has no window
    requests: int | None = Field(default=None, ge=0, le=MAX_REQUESTS)
    tokens: int | None = Field(default=None, ge=0, le=MAX_TOKENS)
    concurrent: int | None = Field(default=None, ge=0, le=MAX_REQUESTS)
    count: TokenCount | None = None  # which tokens a `tokens` limit counts (default total)
    tiers: tuple[Tier, ...] = ()
    shadow: bool = False

    @model_validator(mode="after")
    def _client_scope(self) -> "Limit":
        if (self.scope == "client") != bool(self.match.invalid_key):
            raise ValueError('scope "client" goes with match "invalid_key", and only with it')
        return self

    @model_validator(mode="after")
    def _count(self) -> "Limit":
        given = _counts_given(self)
        if len(given) + bool(self.tiers) != 1:
            raise ValueError("give one of requests, tokens, concurrent or tiers")
        if self.tiers and len({tier.kind for tier in self.tiers}) != 1:
            raise ValueError("tiers must all count the same: requests, tokens or concurrent")
        kind = self.kind
        if kind == "concurrent" and self.unit is not None:
            raise ValueError("a concurrent limit has no unit: it counts requests in flight")
        if kind != "concurrent" and self.unit is None:
            raise ValueError("unit is required: second, minute, hour or day")
        if self.count is not None and kind != "tokens":
            raise ValueError("count goes with tokens only")
        if self.scope == "client" and kind != "requests":
            raise ValueError('scope "client" counts requests only')
        if self.tiers:
            floors = [t.min_purchased for t in self.tiers]
            if floors[0] != 0:
                raise ValueError('the first tier must start at min_purchased = "0"')
            if any(b <= a for a, b in itertools.pairwise(floors)):
                raise ValueError("tiers must be in increasing order of min_purchased")
        return self

    @property
    def label(self) -> str:
        return self.description or self.name

    @property
    def kind(self) -> Kind:
        """What the limit counts: requests or tokens per window, or requests in flight."""
        given = _counts_given(self)
        return given[0] if given else self.tiers[0].kind

    @property
    def token_count(self) -> TokenCount:
        return self.count or "total"

    def tier_table(self) -> tuple[tuple[Decimal, int], ...]:
        """(min lifetime purchases in USD, count) from the lowest tier up."""
        if not self.tiers:
            amount = getattr(self, self.kind)
            return ((Decimal(0), int(amount)),)
        return tuple((t.min_purchased, t.amount) for t in self.tiers)


class LimitsFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    limits: tuple[Limit, ...] = ()

    @field_validator("limits")
    @classmethod
    def _unique(cls, limits: tuple[Limit, ...]) -> tuple[Limit, ...]:
        names = [limit.name for limit in limits]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"limit names must be unique: {', '.join(dupes)}")
        return limits


DEFAULT_LIMITS_NAME = "default_limits.toml"


def default_limits_text() -> str:
    return resources.files("config").joinpath(DEFAULT_LIMITS_NAME).read_text(encoding="utf-8")


def parse_limits(text: str, name: str) -> LimitsFile:
    """Validate a limits file's text; ConfigError lists every problem as name:line: message."""
    import tomllib

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = _line_from(str(exc))
        raise ConfigError([ConfigProblem(name, line, f"not valid TOML: {exc}")]) from None
    try:
        return LimitsFile.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p))
            where = ".".join(str(p) for p in loc)
            message = str(err["msg"]).removeprefix("Value error, ")
            problems.append(ConfigProblem(name, line_of(text, loc), f"{where}: {message}"))
        raise ConfigError(problems) from None


def load_limits(path: Path | None) -> LimitsFile:
    """The operator's file, or the shipped default that expresses billing-rules.md."""
    if path is None:
        return parse_limits(default_limits_text(), f"<default {DEFAULT_LIMITS_NAME}>")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([ConfigProblem(str(path), 1, f"cannot read: {exc.strerror}")]) from None
    return parse_limits(text, str(path))


def _line_from(message: str) -> int:
    found = re.search(r"at line (\d+)", message)
    return int(found.group(1)) if found else 1
