"""The catalog as the request path uses it: each model with its price table and its providers."""

import random
from dataclasses import dataclass

from config.catalog import Catalog, ModelConfig, ProviderConfig
from metering.pricing import PriceTable


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    config: ModelConfig
    prices: PriceTable
    providers: tuple[ProviderConfig, ...]

    @property
    def id(self) -> str:
        return self.config.id

    @property
    def is_free(self) -> bool:
        return self.prices.is_free

    def providers_in_turn(self) -> tuple[ProviderConfig, ...]:
        """The providers to try in order: with the catalog's `weights`, the first is drawn at
        random by weight (spreading load as the operator wants), the others follow as listed."""
        weights = self.config.weights
        if not weights or len(self.providers) < 2:
            return self.providers
        shares = [weights.get(p.name, 0) for p in self.providers]
        first = random.choices(self.providers, shares)[0]
        return (first, *(p for p in self.providers if p is not first))


def resolve_catalog(catalog: Catalog) -> dict[str, ResolvedModel]:
    return {
        m.id: ResolvedModel(
            config=m,
            prices=PriceTable.from_pricing(m.pricing),
            providers=tuple(catalog.providers[name] for name in m.provider_names),
        )
        for m in catalog.models.values()
    }
