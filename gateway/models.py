"""The catalog as the request path uses it: each model with its price table and its providers."""

import random
from dataclasses import dataclass

from config.catalog import APIS, Catalog, ModelConfig, ProviderConfig
from metering.pricing import PriceTable


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    config: ModelConfig
    prices: PriceTable
    providers: tuple[ProviderConfig, ...]
    everywhere: frozenset[str] = frozenset(APIS)  # the APIs every one of its providers serves

    def serving(self, api: str) -> tuple[ProviderConfig, ...]:
        """Its providers that serve `api` natively."""
        if api in self.everywhere:
            return self.providers
        return tuple(p for p in self.providers if api in p.apis)

    @property
    def id(self) -> str:
        return self.config.id

    @property
    def is_free(self) -> bool:
        return self.prices.is_free

    def providers_in_turn(self, api: str) -> tuple[ProviderConfig, ...]:
        """The providers serving `api`, in the order to try them: with the catalog's `weights`,
        the first is drawn at random by weight (spreading load as the operator wants), the
        others follow as listed."""
        providers = self.serving(api)
        weights = self.config.weights
        if not weights or len(providers) < 2:
            return providers
        shares = [weights.get(p.name, 0) for p in providers]
        if not any(shares):
            return providers
        first = random.choices(providers, shares)[0]
        return (first, *(p for p in providers if p is not first))


def resolve_catalog(catalog: Catalog) -> dict[str, ResolvedModel]:
    return {
        m.id: ResolvedModel(
            config=m,
            prices=PriceTable.from_pricing(m.pricing),
            providers=tuple(catalog.providers[name] for name in m.provider_names),
            everywhere=frozenset.intersection(
                *(frozenset(catalog.providers[name].apis) for name in m.provider_names)
            ),
        )
        for m in catalog.models.values()
    }
