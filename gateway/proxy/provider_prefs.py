"""The `provider` preferences object of a request, as OpenRouter documents it: which of a model's
providers may serve it, and in which order.

    order               these first, in this order (names that do not serve the model are passed
                        over); then the others, unless allow_fallbacks is false
    allow_fallbacks     false: only the providers in `order` (without `order`, only the first)
    only, ignore        allow and deny lists of provider names
    sort                "price", "throughput" or "latency": the others in that order (latency and
                        throughput from the gateway's own recent measurements, ProviderStats)
    max_price           {prompt, completion} USD per million tokens, {request, image} USD each:
                        a model listed above any of them is not tried
    require_parameters  only providers that declare every parameter the request uses (the
                        catalog's `supported_parameters`, on the provider or the model)
    data_collection     "deny": not the providers the catalog marks `collects_data`

Other fields OpenRouter has (quantizations, zdr, ...) are accepted and have nothing to act on
here. Prices are per model in this catalog, so "price" orders a model's providers as listed.
"""

from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from config.catalog import ProviderConfig
from gateway.http.errors import bad_request
from gateway.models import ResolvedModel
from gateway.proxy.forward.provider_stats import ProviderStats

Sort = Literal["price", "throughput", "latency"]
SORTS: tuple[Sort, ...] = ("price", "throughput", "latency")
PER_MILLION = Decimal(1_000_000)
PRICE_FIELDS: dict[str, Decimal] = {
    "prompt": PER_MILLION,
    "completion": PER_MILLION,
    "request": Decimal(1),
    "image": Decimal(1),
}
# What every provider is sent or that is the gateway's: never a reason to pass one over.
CORE_PARAMETERS = frozenset(
    {"model", "messages", "prompt", "stream", "stream_options", "max_tokens"}
    | {"max_completion_tokens", "models", "route", "provider", "user", "usage", "transforms"}
)
MAX_NAMES = 64


@dataclass(frozen=True, slots=True)
class ProviderPrefs:
    order: tuple[str, ...] = ()
    allow_fallbacks: bool = True
    only: frozenset[str] | None = None
    ignore: frozenset[str] = frozenset()
    sort: Sort | None = None
    max_price: dict[str, Decimal] = field(default_factory=dict)  # USD per token, or each
    require_parameters: bool = False
    deny_data_collection: bool = False

    def within_price(self, model: ResolvedModel) -> bool:
        pricing = model.config.pricing
        return all(getattr(pricing, name) <= top for name, top in self.max_price.items())

    def providers_for(
        self, model: ResolvedModel, api: str, parameters: frozenset[str], stats: ProviderStats
    ) -> tuple[ProviderConfig, ...]:
        """The model's providers serving `api` that these preferences allow, in the order to
        try them."""
        ordered = self.order or self.sort
        listed = model.serving(api) if ordered else model.providers_in_turn(api)
        allowed = [p for p in listed if self._allows(p, model, parameters)]
        rest = list(allowed)
        if self.sort == "latency":
            rest.sort(key=lambda p: stats.latency_rank(p.name))
        elif self.sort == "throughput":
            rest.sort(key=lambda p: stats.throughput_rank(p.name))
        first = [p for name in self.order for p in allowed if p.name == name]
        if not self.allow_fallbacks:
            return tuple(first or rest[:1])
        return tuple(first + [p for p in rest if p not in first])

    def _allows(
        self, provider: ProviderConfig, model: ResolvedModel, params: frozenset[str]
    ) -> bool:
        if self.only is not None and provider.name not in self.only:
            return False
        if provider.name in self.ignore:
            return False
        if self.deny_data_collection and provider.collects_data:
            return False
        if self.require_parameters:
            for declared in (provider.supported_parameters, model.config.supported_parameters):
                if declared is not None and not params <= set(declared):
                    return False
        return True


NO_PREFERENCES = ProviderPrefs()


def parse_prefs(value: Any, sort: Sort | None = None) -> ProviderPrefs:
    """The request's `provider` object (None: no preferences); `sort` from a model suffix
    (`:nitro`, `:floor`) when the object names none. Each problem is a 400 naming its field."""
    if value is None:
        return NO_PREFERENCES if sort is None else ProviderPrefs(sort=sort)
    if not isinstance(value, dict):
        raise bad_request("'provider' must be an object of provider preferences", "provider")
    chosen = value.get("sort")
    if chosen is not None and chosen not in SORTS:
        raise bad_request("'provider.sort' must be price, throughput or latency", "provider.sort")
    collection = value.get("data_collection")
    if collection not in (None, "allow", "deny"):
        raise bad_request(
            "'provider.data_collection' must be allow or deny", "provider.data_collection"
        )
    only = value.get("only")
    return ProviderPrefs(
        order=tuple(_names(value, "order")),
        allow_fallbacks=_flag(value, "allow_fallbacks", True),
        only=None if only is None else frozenset(_names(value, "only")),
        ignore=frozenset(_names(value, "ignore")),
        sort=chosen or sort,
        max_price=_max_price(value.get("max_price")),
        require_parameters=_flag(value, "require_parameters", False),
        deny_data_collection=collection == "deny",
    )


def request_parameters(body: dict[str, Any]) -> frozenset[str]:
    """The parameters a provider must support to serve this request (require_parameters)."""
    return frozenset(name for name, v in body.items() if v is not None) - CORE_PARAMETERS


def _names(value: dict[str, Any], name: str) -> list[str]:
    names = value.get(name)
    if names is None:
        return []
    if (
        not isinstance(names, list)
        or len(names) > MAX_NAMES
        or not all(isinstance(n, str) and n for n in names)
    ):
        raise bad_request(
            f"'provider.{name}' must be an array of provider names", f"provider.{name}"
        )
    return names


def _flag(value: dict[str, Any], name: str, default: bool) -> bool:
    flag = value.get(name)
    if flag is None:
        return default
    if not isinstance(flag, bool):
        raise bad_request(f"'provider.{name}' must be true or false", f"provider.{name}")
    return flag


def _max_price(value: Any) -> dict[str, Decimal]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise bad_request("'provider.max_price' must be an object", "provider.max_price")
    limits: dict[str, Decimal] = {}
    for name, per in PRICE_FIELDS.items():
        raw = value.get(name)
        if raw is None:
            continue
        field_name = f"provider.max_price.{name}"
        try:
            amount = Decimal(str(raw)) if not isinstance(raw, bool) else Decimal("nan")
        except InvalidOperation:
            amount = Decimal("nan")
        if not amount.is_finite() or amount < 0:
            raise bad_request(f"'{field_name}' must be a non-negative number of USD", field_name)
        limits[name] = amount / per
    return limits
