"""Settings, the model catalog and their loading: no HTTP, no Redis."""

from config.catalog import Catalog, ModelConfig, Pricing, ProviderConfig
from config.errors import ConfigError, ConfigProblem
from config.settings import Settings, load_settings

__all__ = [
    "Catalog",
    "ConfigError",
    "ConfigProblem",
    "ModelConfig",
    "Pricing",
    "ProviderConfig",
    "Settings",
    "load_settings",
]
