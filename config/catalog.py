"""The model catalog: providers, models and their listed prices, validated once at start-up.

Prices are decimal strings (USD per token, or per request) exactly as providers list them. A float
in the file is refused: 0.1 in binary is not 0.1, and money here is exact to the nanodollar.
"""

from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

MAX_PRICE_DECIMALS = 18
Api = Literal["chat", "completions", "embeddings", "responses", "messages"]
# What a provider serves when its `apis` are not given: the OpenAI-compatible three (Responses and
# Anthropic's Messages are declared where served).
APIS: tuple[Api, ...] = ("chat", "completions", "embeddings")
# What a model reads and writes, in OpenRouter's words (its models list's `architecture`).
InputModality = Literal["text", "image", "file", "audio", "video"]
OutputModality = Literal["text", "image", "embeddings", "audio", "video"]


def _parse_price(value: Any) -> Decimal:
    if isinstance(value, (bool, float)):
        raise ValueError('must be a decimal string such as "0.00000015", not a float')
    if isinstance(value, (int, Decimal)):
        value = str(value)
    if not isinstance(value, str):
        raise ValueError('must be a decimal string such as "0.00000015"')
    try:
        price = Decimal(value.strip())
    except InvalidOperation:
        raise ValueError(f"{value!r} is not a decimal number") from None
    if not price.is_finite() or price < 0:
        raise ValueError(f"{value!r} must be a finite, non-negative amount")
    exponent = price.as_tuple().exponent
    if isinstance(exponent, int) and -exponent > MAX_PRICE_DECIMALS:
        raise ValueError(f"{value!r} has more than {MAX_PRICE_DECIMALS} decimals")
    return price


PriceUSD = Annotated[Decimal, BeforeValidator(_parse_price)]


class Pricing(BaseModel):
    """USD per token (per request for `request`, per image for `image`), as listed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: PriceUSD = Decimal(0)
    completion: PriceUSD = Decimal(0)
    request: PriceUSD = Decimal(0)
    image: PriceUSD = Decimal(0)
    # Not listed (None): those tokens are billed at the prompt or completion price they belong to.
    internal_reasoning: PriceUSD | None = None
    input_cache_read: PriceUSD | None = None
    input_cache_write: PriceUSD | None = None

    @property
    def is_free(self) -> bool:
        return all(not v for v in self.model_dump().values())


class ProviderConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")
    base_url: str = Field(pattern=r"^https?://")
    api_key_env: str | None = None
    # Several keys, used in turn (a key that is rate limited or refused is passed over a while).
    api_key_envs: tuple[str, ...] = ()
    # The APIs it serves natively (a request for another passes it over).
    apis: tuple[Api, ...] = APIS
    simulated: bool = False
    # Stores or trains on what it is sent: a request's `provider.data_collection: "deny"` skips it.
    collects_data: bool = False
    # Connections open to it at most, per key (a request finding them all busy waits, up to the
    # connect timeout).
    max_connections: int = Field(default=10_000, ge=1, le=100_000)
    # The request parameters it supports (None: not declared, taken as all): a request's
    # `provider.require_parameters: true` skips it when it uses another.
    supported_parameters: tuple[str, ...] | None = None
    # The egress proxy it is reached through (http://[user:pass@]host:port), or "direct" for
    # none; unset: HTTPS_PROXY / HTTP_PROXY / NO_PROXY from the environment.
    proxy: str | None = Field(default=None, pattern=r"^(direct|http://\S+)$")

    @field_validator("base_url")
    @classmethod
    def _strip_slash(cls, v: str) -> str:
        """Its path and query are kept (Azure's `?api-version=`); credentials are refused."""
        parts = urlsplit(v)
        if parts.username is not None or parts.password is not None:
            raise ValueError("must not hold credentials: give the key with api_key_env")
        if parts.fragment:
            raise ValueError("must not have a #fragment")
        if parts.query:
            return v
        return v.rstrip("/")

    @model_validator(mode="after")
    def _one_key_list(self) -> "ProviderConfig":
        if self.api_key_env and self.api_key_envs:
            raise ValueError("give either api_key_env or api_key_envs, not both")
        return self

    @property
    def key_envs(self) -> tuple[str, ...]:
        """The environment variables that hold its keys, in the order they are used."""
        return (self.api_key_env,) if self.api_key_env else self.api_key_envs


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, max_length=200)
    provider: str | None = None
    providers: list[str] = Field(default_factory=list)
    upstream_model: str | None = None
    max_output_tokens: int = Field(default=4096, gt=0, le=10_000_000)
    context_length: int | None = Field(default=None, gt=0)
    name: str | None = None
    pricing: Pricing = Field(default_factory=Pricing)
    # As a provider's: what every provider of this model supports (both lists apply).
    supported_parameters: tuple[str, ...] | None = None
    # How often each provider is tried first: {"a": 3, "b": 1}; unlisted providers weigh 0.
    weights: dict[str, int] | None = None
    # What the models list says of it beside the prices, as OpenRouter's does: none of these
    # changes what a request may do or costs.
    canonical_slug: str | None = Field(default=None, min_length=1, max_length=200)  # None: id
    created: int = Field(default=0, ge=0)  # unix seconds it was added; 0: not said
    description: str = ""
    input_modalities: tuple[InputModality, ...] = Field(default=("text",), min_length=1)
    # None: ["embeddings"] when its providers serve only embeddings, else ["text"]
    output_modalities: tuple[OutputModality, ...] | None = Field(default=None, min_length=1)
    tokenizer: str = Field(default="Other", min_length=1)  # OpenRouter's: GPT, Claude, Llama3...
    instruct_type: str | None = None  # the prompt format of a raw completion: chatml, llama3...

    @model_validator(mode="after")
    def _one_provider_list(self) -> "ModelConfig":
        if self.provider and self.providers:
            raise ValueError("give either provider or providers, not both")
        if not self.provider and not self.providers:
            raise ValueError("a model needs a provider (or a providers list, in fallback order)")
        if self.id.endswith(":free") and not self.pricing.is_free:
            raise ValueError(f"{self.id} ends in ':free' but lists a non-zero price")
        if self.weights is not None:
            unknown = set(self.weights) - set(self.provider_names)
            if unknown:
                names = ", ".join(sorted(unknown))
                raise ValueError(f"weights name providers the model does not list: {names}")
            if any(w < 0 for w in self.weights.values()) or not any(self.weights.values()):
                raise ValueError("weights must be whole numbers from 0, at least one above 0")
        return self

    @property
    def provider_names(self) -> list[str]:
        return [self.provider] if self.provider else list(self.providers)

    @property
    def upstream_name(self) -> str:
        return self.upstream_model or self.id

    @property
    def is_free(self) -> bool:
        return self.pricing.is_free


class Catalog:
    """Models by id and providers by name, checked for dangling references."""

    def __init__(self, providers: list[ProviderConfig], models: list[ModelConfig]) -> None:
        self.providers = {p.name: p for p in providers}
        self.models = {m.id: m for m in models}

    @staticmethod
    def problems(
        providers: list[ProviderConfig], models: list[ModelConfig]
    ) -> list[tuple[tuple[int | str, ...], str]]:
        """Cross-reference problems as (location, message); empty when the catalog is sound."""
        out: list[tuple[tuple[int | str, ...], str]] = []
        names: set[str] = set()
        for i, p in enumerate(providers):
            if p.name in names:
                out.append((("providers", i, "name"), f"duplicate provider name {p.name!r}"))
            names.add(p.name)
        seen: set[str] = set()
        for i, m in enumerate(models):
            if m.id in seen:
                out.append((("models", i, "id"), f"duplicate model id {m.id!r}"))
            seen.add(m.id)
            field = "provider" if m.provider else "providers"
            for name in m.provider_names:
                if name not in names:
                    out.append((("models", i, field), f"unknown provider {name!r}"))
        return out

    def get(self, model_id: str) -> ModelConfig | None:
        return self.models.get(model_id)
