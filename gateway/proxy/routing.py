"""Which models may serve a request, in order, and which of its fields are the gateway's own.

OpenRouter's routing fields, as it documents them: `models` names fallbacks, tried in order when
the model before them fails before any output (a provider error or timeout, its 429, a refusal
such as a context that is too long); the answer's `model` is the one that served, and the charge
is that model's listed price. `route: "fallback"` is accepted (the only value). `provider` holds
provider preferences. None of them reaches a provider.

Admission reserves the worst case of the costliest candidate, so that whichever serves, the charge
is within what was reserved (one admission, whatever the fallbacks: re-taking the reservation per
candidate would cost a Redis round trip for each).
"""

from typing import Any

from gateway.http.errors import ApiError, bad_request
from gateway.models import ResolvedModel

ROUTING_FIELDS = frozenset({"models", "route", "provider"})
MAX_FALLBACKS = 3  # entries of `models`, as OpenRouter allows


def candidates(
    body: dict[str, Any], primary: str, catalog: dict[str, ResolvedModel]
) -> tuple[ResolvedModel, ...]:
    """`primary` (the request's `model`: a 404 when the catalog lacks it), then its `models`
    not yet named. A fallback the catalog lacks is skipped, as OpenRouter-style gateways do: a
    model taken out of the catalog must not break every client that lists it as a fallback."""
    route = body.get("route")
    if route is not None and route != "fallback":
        raise bad_request("'route' must be \"fallback\" (the only routing OpenRouter has)", "route")
    named = body.get("models")
    if named is None:
        return (_listed(catalog, primary),)
    if (
        not isinstance(named, list)
        or not named
        or not all(isinstance(m, str) and m.strip() for m in named)
    ):
        raise bad_request("'models' must be a non-empty array of model ids", "models")
    if len(named) > MAX_FALLBACKS:
        raise bad_request(f"'models' may name at most {MAX_FALLBACKS} models", "models")
    first = _listed(catalog, primary)
    others = (catalog.get(m) for m in dict.fromkeys(named) if m != primary)
    return (first, *(model for model in others if model is not None))


def _listed(catalog: dict[str, ResolvedModel], model_id: str) -> ResolvedModel:
    model = catalog.get(model_id)
    if model is None:
        raise ApiError(
            404,
            f"model {model_id!r} is not available here; see GET /api/v1/models",
            "model_not_found",
        )
    return model


def provider_body(body: dict[str, Any]) -> dict[str, Any]:
    """The request as a provider may see it: the routing fields taken out."""
    if ROUTING_FIELDS.isdisjoint(body):
        return dict(body)
    return {k: v for k, v in body.items() if k not in ROUTING_FIELDS}
