"""Settings from environment variables: defaults, parsing and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.config import ConfigError, Settings


def test_defaults() -> None:
    settings = Settings.from_env({})
    assert settings.model_store == Path("model_store")
    assert settings.default_model == "iris"
    assert settings.bind == "127.0.0.1:8000"  # loopback unless told otherwise
    assert settings.strict_versions is False
    assert settings.workers >= 1
    assert settings.max_body_bytes == 4 * 1024 * 1024
    assert settings.models == ()


def test_every_variable_is_read() -> None:
    settings = Settings.from_env(
        {
            "SERVICE_MODEL_STORE": "/srv/models",
            "SERVICE_MODELS": "iris, diabetes",
            "SERVICE_MODEL_VERSIONS": "iris=2,diabetes=1.0",
            "SERVICE_DEFAULT_MODEL": "diabetes",
            "SERVICE_STRICT_VERSIONS": "true",
            "SERVICE_MAX_BODY_BYTES": "1024",
            "SERVICE_MAX_BATCH_ROWS": "10",
            "HOST": "::1",
            "PORT": "9000",
            "SERVICE_WORKERS": "3",
            "SERVICE_THREADS": "4",
            "SERVICE_MODEL_THREADS": "2",
            "SERVICE_TIMEOUT": "60",
            "SERVICE_GRACEFUL_TIMEOUT": "20",
            "SERVICE_MAX_REQUESTS": "0",
            "SERVICE_MAX_REQUESTS_JITTER": "0",
            "SERVICE_LOG_LEVEL": "debug",
        }
    )
    assert settings.model_store == Path("/srv/models")
    assert settings.models == ("iris", "diabetes")
    assert settings.model_versions == {"iris": "2", "diabetes": "1.0"}
    assert settings.default_model == "diabetes"
    assert settings.strict_versions is True
    assert (settings.max_body_bytes, settings.max_batch_rows) == (1024, 10)
    assert settings.bind == "[::1]:9000"
    assert (settings.workers, settings.threads, settings.model_threads) == (3, 4, 2)
    assert (settings.timeout, settings.graceful_timeout) == (60, 20)
    assert (settings.max_requests, settings.max_requests_jitter) == (0, 0)
    assert settings.log_level == "DEBUG"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SERVICE_WORKERS", "many"),
        ("SERVICE_WORKERS", "0"),
        ("PORT", "70000"),
        ("SERVICE_STRICT_VERSIONS", "perhaps"),
        ("SERVICE_MODEL_VERSIONS", "iris"),
        ("SERVICE_LOG_LEVEL", "loud"),
        ("SERVICE_MAX_BODY_BYTES", "-1"),
    ],
)
def test_bad_values_name_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env({variable: value})


def test_blank_values_mean_the_default() -> None:
    assert Settings.from_env({"SERVICE_WORKERS": " ", "PORT": ""}).port == 8000


def test_overrides_win_over_the_environment() -> None:
    assert Settings.from_env({"PORT": "9000"}, port=9100).port == 9100
