"""Gateway settings: `GATEWAY_*` environment variables over a TOML file over the defaults.

The TOML file (``--config`` or ``GATEWAY_CONFIG``) also carries the catalog (``[[providers]]`` and
``[[models]]``). Every policy number of billing-rules.md is a setting here, never a literal in code.
"""

import os
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from config.catalog import Catalog, ModelConfig, ProviderConfig
from config.environment import PREFIX, is_service_link
from config.errors import ConfigError, ConfigProblem
from config.locate import line_of
from config.redis_url import redis_url_problem

MiB = 1024 * 1024


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="GATEWAY_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="forbid",
        validate_default=True,
    )

    config: Path | None = Field(default=None, description="TOML file these settings came from")
    redis_url: str | None = Field(default=None, description="external Redis; absent: embedded")
    admin_token: SecretStr | None = None
    data_dir: Path = Path("gateway-data")
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    workers: int = Field(default=1, ge=1, le=64)
    limits_file: Path | None = Field(default=None, description="rate limits; absent: shipped")
    limits_reload_seconds: float = Field(default=2.0, gt=0)
    admit_free_models_without_redis: bool = False
    payments_webhook_secret: SecretStr | None = None
    topup_webhook_url: str | None = None
    topup_webhook_secret: SecretStr | None = None
    payments_request_url: str | None = Field(
        default=None,
        description="the payment side's endpoint for the account holder's checkouts and refunds "
        "(signed `checkout.requested` and `refund.requested` requests)",
    )
    payments_request_secret: SecretStr | None = None
    public_url: str | None = Field(
        default=None,
        description="the gateway's address as browsers reach it (https://gw.example.com): where "
        "the payment side sends the account holder back to; unset: the request's own",
    )

    max_body_bytes: int = Field(default=4 * MiB, gt=0)
    upstream_connect_timeout: float = Field(default=10.0, gt=0)
    upstream_read_timeout: float = Field(default=300.0, gt=0)
    upstream_total_timeout: float = Field(
        default=900.0, gt=0, description="bound on one whole provider answer, streams included"
    )
    upstream_retries: int = Field(
        default=0,
        ge=0,
        le=5,
        description="rounds over a request's providers again when every try failed for a reason "
        "worth retrying (429, 5xx, unreachable), before any output",
    )
    provider_cooldown_seconds: float = Field(
        default=10.0,
        ge=0,
        le=600,
        description="how long a provider that failed, or a key that was rate limited without a "
        "Retry-After, is passed over (0: never)",
    )
    stream_keepalive_seconds: float = Field(default=15.0, gt=0)
    cancelled_stream_usage_seconds: float = Field(
        default=2.0,
        ge=0,
        le=60,
        description="after a client hangs up mid-stream, how long the provider's stream is still "
        "read (not relayed) for its own usage; 0: closed at once",
    )
    client_write_timeout: float = Field(
        default=60.0, gt=0, description="a client that takes no bytes this long is dropped"
    )
    client_read_timeout: float = Field(
        default=60.0, gt=0, description="a request body still arriving after this long is a 408"
    )
    client_idle_timeout: float = Field(
        default=75.0,
        gt=0,
        description="a connection with no request under way is closed after this long, "
        "one whose request head is still arriving included",
    )
    reservation_timeout_seconds: int = Field(default=900, gt=0)
    key_cache_seconds: float = Field(default=5.0, ge=0)
    lease_above_requests_per_second: float = Field(
        default=100.0,
        ge=0,
        description="a busy account's paid requests under no rate limit are admitted from a "
        "lease (a slice of its credit held by this process) above this many a second here; "
        "0: never",
    )
    lease_seconds: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="how long a lease admits before the next request renews it: the bound on "
        "how late a key change or a refund's recall is seen",
    )
    redis_timeout_seconds: float = Field(default=2.0, gt=0)
    admission_timeout_seconds: float = Field(
        default=0.25, gt=0, description="bound on the admission round trip: then 503"
    )
    redis_appendfsync: Literal["always", "everysec", "no"] = "everysec"
    redis_replica_wait_ms: int = Field(
        default=100,
        ge=0,
        le=10_000,
        description="on a cluster, how long a settlement waits for a replica to confirm it "
        "(WAIT) before it is journaled to be run again; 0: no waiting",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "debug", "info", "warning", "error"] = (
        "INFO"
    )
    log_format: Literal["auto", "json", "text"] = "auto"
    journal_replay_seconds: float = Field(default=2.0, gt=0)
    metrics_enabled: bool = True
    metrics_token: SecretStr | None = Field(default=None, description="bearer for /metrics")
    metrics_port: int | None = Field(
        default=None, ge=0, le=65535, description="serve /metrics on its own port instead"
    )
    usage_record_days: int = Field(default=90, gt=0)
    rollup_days: int = Field(default=730, gt=0, description="daily and monthly chart data")

    card_fee_percent: Decimal = Decimal("5.5")
    card_fee_minimum: Decimal = Decimal("0.80")
    crypto_fee_percent: Decimal = Decimal("5")
    crypto_fee_minimum: Decimal = Decimal("0")
    tier_purchase_threshold: Decimal = Field(default=Decimal("10"), ge=0)
    max_purchase: Decimal = Field(default=Decimal("100000"), gt=0)
    new_account_grant: Decimal = Field(default=Decimal("0"), ge=0)
    refund_window_hours: float = Field(default=24, ge=0)
    credit_expiry_days: float = Field(default=365, ge=0, description="0 turns expiry off")
    expiry_sweep_seconds: float = Field(default=3600, gt=0)
    topup_poll_seconds: float = Field(default=1.0, gt=0)
    topup_max_attempts: int = Field(default=8, ge=1, le=100)
    topup_pending_hours: float = Field(default=24, gt=0)
    checkout_expiry_seconds: float = Field(
        default=3600,
        gt=0,
        description="a checkout nobody pays within this long is shown as failed (a payment that "
        "still comes credits all the same)",
    )
    max_open_checkouts: int = Field(
        default=10, ge=1, le=1000, description="checkouts an account may have pending at once"
    )

    @model_validator(mode="after")
    def _outgoing_requests_are_signed(self) -> "Settings":
        secret = self.topup_webhook_secret.get_secret_value() if self.topup_webhook_secret else ""
        if self.topup_webhook_url and not secret:
            raise ValueError(
                "topup_webhook_url needs topup_webhook_secret: requests that buy "
                "credits must be signed"
            )
        secret = (
            self.payments_request_secret.get_secret_value() if self.payments_request_secret else ""
        )
        if self.payments_request_url and not secret:
            raise ValueError(
                "payments_request_url needs payments_request_secret: requests that collect or "
                "return money must be signed"
            )
        return self

    @field_validator("redis_url")
    @classmethod
    def _usable_redis_url(cls, url: str | None) -> str | None:
        problem = redis_url_problem(url) if url else None
        if problem:
            raise ValueError(problem)
        return url

    providers: list[ProviderConfig] = Field(default_factory=list)
    models: list[ModelConfig] = Field(default_factory=list)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The TOML file arrives as init values, so the environment must outrank it.
        if isinstance(env_settings, EnvSettingsSource):  # Kubernetes' GATEWAY_PORT=tcp://...
            env_settings.env_vars = {
                name: value
                for name, value in env_settings.env_vars.items()
                if value is None or not is_service_link(name, value)
            }
        return (env_settings, dotenv_settings, init_settings)

    def catalog(self) -> Catalog:
        return Catalog(self.providers, self.models)

    def own_secrets(self) -> list[str]:
        """The gateway's own secrets: no answer relayed from a provider may carry one."""
        held = (
            self.admin_token,
            self.payments_webhook_secret,
            self.topup_webhook_secret,
            self.payments_request_secret,
            self.metrics_token,
        )
        return [s.get_secret_value() for s in held if s is not None and s.get_secret_value()]

    @property
    def admin_enabled(self) -> bool:
        return bool(self.admin_token and self.admin_token.get_secret_value())


def read_toml(path: Path) -> tuple[dict[str, Any], str]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([ConfigProblem(str(path), 1, f"cannot read: {exc.strerror}")]) from None
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as exc:
        line = getattr(exc, "lineno", None) or _lineno_from_message(str(exc))
        raise ConfigError([ConfigProblem(str(path), line, f"not valid TOML: {exc}")]) from None


def _lineno_from_message(message: str) -> int:
    marker = "(at line "
    if marker in message:
        digits = message.split(marker, 1)[1].split(",", 1)[0]
        if digits.isdigit():
            return int(digits)
    return 1


def load_settings(config_path: Path | str | None = None, **overrides: Any) -> Settings:
    """Read the TOML file (if any), apply `GATEWAY_*` env, validate everything, check the catalog.

    Raises ConfigError listing every problem as file:line: message.
    """
    path_text = config_path or os.environ.get("GATEWAY_CONFIG")
    data: dict[str, Any] = {}
    text = ""
    name = "<environment>"
    if path_text:
        path = Path(path_text)
        data, text = read_toml(path)
        data["config"] = path
        name = str(path)
    data.update(overrides)
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        raise ConfigError([_problem(name, text, err) for err in exc.errors()]) from None
    cross = Catalog.problems(settings.providers, settings.models)
    if cross:
        raise ConfigError([ConfigProblem(name, line_of(text, loc), msg) for loc, msg in cross])
    return settings


def _problem(name: str, text: str, err: Any) -> ConfigProblem:
    """Pinned to the file's line, or to the environment variable that set the value."""
    loc = tuple(err["loc"])
    variable = PREFIX + str(loc[0]).upper() if loc else ""
    if variable and variable in {key.upper() for key in os.environ}:
        return ConfigProblem("environment", 0, f"{variable}: {_describe(err, loc[1:])}")
    return ConfigProblem(name, line_of(text, loc), _describe(err))


def _describe(err: Any, loc: tuple[Any, ...] | None = None) -> str:
    where = ".".join(str(p) for p in (err["loc"] if loc is None else loc))
    msg = str(err["msg"]).removeprefix("Value error, ")
    return f"{where}: {msg}" if where else msg
