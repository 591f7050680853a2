"""The catalog as the request path uses it: each model with its price table and its providers."""

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


def resolve_catalog(catalog: Catalog) -> dict[str, ResolvedModel]:
    return {
        m.id: ResolvedModel(
            config=m,
            prices=PriceTable.from_pricing(m.pricing),
            providers=tuple(catalog.providers[name] for name in m.provider_names),
        )
        for m in catalog.models.values()
    }
