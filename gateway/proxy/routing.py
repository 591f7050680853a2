"""Which models and providers may serve a request, in order, and which of its fields are the
gateway's own.

OpenRouter's routing fields, as it documents them: `models` names fallbacks, tried in order when
the model before them fails before any output (a provider error or timeout, its 429, a refusal
such as a context that is too long); the answer's `model` is the one that served, and the charge
is that model's listed price. `route: "fallback"` is accepted (the only value). `provider` holds
provider preferences (gateway.proxy.provider_prefs); the model suffixes `:nitro` and `:floor`
sort providers by throughput and by price. None of these fields reaches a provider.

Admission reserves the worst case of the costliest candidate, so that whichever serves, the charge
is within what was reserved (one admission, whatever the fallbacks: re-taking the reservation per
candidate would cost a Redis round trip for each).
"""

from typing import Any, NamedTuple

from config.catalog import ProviderConfig
from gateway.http.errors import ApiError, bad_request
from gateway.models import ResolvedModel
from gateway.proxy.forward.provider_stats import ProviderStats
from gateway.proxy.provider_prefs import Sort, parse_prefs, request_parameters

ROUTING_FIELDS = frozenset({"models", "route", "provider"})
MAX_FALLBACKS = 3  # entries of `models`, as OpenRouter allows
VARIANTS: dict[str, Sort] = {":nitro": "throughput", ":floor": "price"}


class Candidate(NamedTuple):
    model: ResolvedModel
    providers: tuple[ProviderConfig, ...]


def candidates(
    body: dict[str, Any],
    primary: str,
    catalog: dict[str, ResolvedModel],
    stats: ProviderStats,
    api: str = "chat",
) -> tuple[Candidate, ...]:
    """`primary` (the request's `model`: a 404 when the catalog lacks it), then its `models`
    not yet named, each with the providers the preferences allow; models with none are passed
    over, and a 404 says so when no candidate is left. A fallback the catalog lacks is skipped,
    as OpenRouter-style gateways do: a model taken out of the catalog must not break every
    client that lists it as a fallback."""
    if ROUTING_FIELDS.isdisjoint(body):
        model = catalog.get(primary)
        if model is not None and api in model.everywhere:  # the common case
            return (Candidate(model, model.providers_in_turn(api)),)
    first, sort = _listed(catalog, primary)
    models = [first, *(m for m in _fallbacks(body, primary, catalog) if m is not first)]
    prefs = parse_prefs(body.get("provider"), sort)
    parameters = request_parameters(body) if prefs.require_parameters else frozenset()
    found: list[Candidate] = []
    for model in {model.id: model for model in models}.values():  # each once, in order
        if prefs.within_price(model):
            providers = prefs.providers_for(model, api, parameters, stats)
            if providers:
                found.append(Candidate(model, providers))
    if not found:
        if not any(m.serving(api) for m in models):
            raise ApiError(
                404,
                f"No endpoints found that support the {api} API for model {first.id!r}",
                "no_endpoints",
                api=api,
            )
        raise ApiError(
            404,
            "No allowed providers are available for the selected model: none of its providers "
            "matches the request's provider preferences (only, ignore, order with "
            "allow_fallbacks false, max_price, require_parameters, data_collection)",
            "no_endpoints",
        )
    return tuple(found)


def _fallbacks(
    body: dict[str, Any], primary: str, catalog: dict[str, ResolvedModel]
) -> list[ResolvedModel]:
    route = body.get("route")
    if route is not None and route != "fallback":
        raise bad_request("'route' must be \"fallback\" (the only routing OpenRouter has)", "route")
    named = body.get("models")
    if named is None:
        return []
    if (
        not isinstance(named, list)
        or not named
        or not all(isinstance(m, str) and m.strip() for m in named)
    ):
        raise bad_request("'models' must be a non-empty array of model ids", "models")
    if len(named) > MAX_FALLBACKS:
        raise bad_request(f"'models' may name at most {MAX_FALLBACKS} models", "models")
    found = (_lookup(catalog, m)[0] for m in named if m != primary)
    return [model for model in found if model is not None]


def _lookup(
    catalog: dict[str, ResolvedModel], model_id: str
) -> tuple[ResolvedModel | None, Sort | None]:
    """The model an id names, and the sort its variant suffix asks for (`x:nitro` is `x`)."""
    model = catalog.get(model_id)
    if model is not None:
        return model, None
    for suffix, sort in VARIANTS.items():
        if model_id.endswith(suffix):
            return catalog.get(model_id.removesuffix(suffix)), sort
    return None, None


def _listed(catalog: dict[str, ResolvedModel], model_id: str) -> tuple[ResolvedModel, Sort | None]:
    model, sort = _lookup(catalog, model_id)
    if model is None:
        raise ApiError(
            404,
            f"model {model_id!r} is not available here; see GET /api/v1/models",
            "model_not_found",
        )
    return model, sort


def provider_body(body: dict[str, Any]) -> dict[str, Any]:
    """The request as a provider may see it: the routing fields taken out. Not a copy when
    there are none (each try's payload copies it: forward/route.py:_payload)."""
    if ROUTING_FIELDS.isdisjoint(body):
        return body
    return {k: v for k, v in body.items() if k not in ROUTING_FIELDS}
