"""Settings and catalog loading: env over TOML, exact prices, problems pinned to their lines."""

import textwrap
from decimal import Decimal
from pathlib import Path

import pytest

from config.errors import ConfigError
from config.settings import load_settings

GOOD = textwrap.dedent("""\
    port = 9000
    max_body_bytes = 1000

    [[providers]]
    name = "openai"
    base_url = "https://api.openai.com/v1/"
    api_key_env = "OPENAI_API_KEY"

    [[models]]
    id = "openai/gpt-4o-mini"
    provider = "openai"
    upstream_model = "gpt-4o-mini"
    max_output_tokens = 16384
    [models.pricing]
    prompt = "0.00000015"
    completion = "0.0000006"
    """)


def test_toml_then_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "g.toml"
    path.write_text(GOOD)
    settings = load_settings(path)
    assert settings.port == 9000 and settings.max_body_bytes == 1000
    assert settings.providers[0].base_url == "https://api.openai.com/v1"
    assert settings.models[0].pricing.prompt == Decimal("0.00000015")
    monkeypatch.setenv("GATEWAY_PORT", "9100")
    monkeypatch.setenv("GATEWAY_CONFIG", str(path))
    assert load_settings().port == 9100


def test_free_suffix_with_a_price_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "g.toml"
    path.write_text(GOOD.replace('id = "openai/gpt-4o-mini"', 'id = "openai/gpt-4o-mini:free"'))
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert "':free'" in str(caught.value)
    assert str(caught.value).startswith(f"{path}:9:")


def test_duplicate_model_points_at_the_second(tmp_path: Path) -> None:
    path = tmp_path / "g.toml"
    second = GOOD[GOOD.index("[[models]]") :]
    path.write_text(GOOD + "\n" + second)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert str(caught.value) == f"{path}:19: duplicate model id 'openai/gpt-4o-mini'"


def test_broken_toml_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "g.toml"
    path.write_text("port = 1\nthis is not toml\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert str(caught.value).startswith(f"{path}:2: not valid TOML")


@pytest.mark.parametrize(
    ("url", "names"),
    [
        ("GATEWAY_TOPUP_WEBHOOK_URL", "topup_webhook_url needs topup_webhook_secret"),
        ("GATEWAY_PAYMENTS_REQUEST_URL", "payments_request_url needs payments_request_secret"),
    ],
)
def test_a_request_that_moves_money_is_never_sent_unsigned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str, names: str
) -> None:
    path = tmp_path / "g.toml"
    path.write_text(GOOD)
    monkeypatch.setenv(url, "https://payments.example/requests")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert names in str(caught.value)
    monkeypatch.setenv(url.removesuffix("_URL") + "_SECRET", "s3cret-signing-key")
    assert load_settings(path).port == 9000
