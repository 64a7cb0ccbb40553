"""Settings from environment variables: defaults, parsing and clear errors."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from service.config import ConfigError, Settings, process_settings, share_metrics_dir
from tests.servers import run_in_repo


def test_defaults() -> None:
    settings = Settings.from_env({})
    assert settings.model_store == Path("model_store")
    assert settings.default_model == "iris"
    assert settings.bind == "127.0.0.1:8000"  # loopback unless told otherwise
    assert settings.strict_versions is False
    assert settings.workers >= 1
    assert settings.max_body_bytes == 4 * 1024 * 1024
    assert settings.models == ()
    assert (settings.batching, settings.batch_max_rows, settings.batch_max_wait_ms) == (True, 256, 2.0)
    assert settings.threads == 32  # enough waiting requests for a worker to gather into one model call


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
            "SERVICE_BATCHING": "off",
            "SERVICE_BATCH_MAX_ROWS": "64",
            "SERVICE_BATCH_MAX_WAIT_MS": "0.5",
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
    assert (settings.batching, settings.batch_max_rows, settings.batch_max_wait_ms) == (False, 64, 0.5)


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
        ("SERVICE_BATCHING", "sometimes"),
        ("SERVICE_BATCH_MAX_ROWS", "0"),
        ("SERVICE_BATCH_MAX_WAIT_MS", "-1"),
        ("SERVICE_BATCH_MAX_WAIT_MS", "nan"),
        ("SERVICE_BATCH_MAX_WAIT_MS", "soon"),
    ],
)
def test_bad_values_name_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env({variable: value})


def test_blank_values_mean_the_default() -> None:
    assert Settings.from_env({"SERVICE_WORKERS": " ", "PORT": ""}).port == 8000


def test_overrides_win_over_the_environment() -> None:
    assert Settings.from_env({"PORT": "9000"}, port=9100).port == 9100


def test_the_metrics_directory_is_prometheus_clients_variable() -> None:
    assert Settings.from_env({}).metrics_dir is None
    assert Settings.from_env({"PROMETHEUS_MULTIPROC_DIR": "/run/metrics"}).metrics_dir == Path("/run/metrics")


def test_process_settings_are_parsed_once() -> None:
    assert process_settings() is process_settings()


def test_an_operators_metrics_directory_is_emptied_of_samples(tmp_path: Path) -> None:
    """A previous run's sample files would be summed into this run's counters; other files stay."""
    (tmp_path / "counter_123.db").write_bytes(b"old")
    (tmp_path / "gauge_livesum_456.db").write_bytes(b"old")
    (tmp_path / "notes.txt").write_text("mine")
    assert share_metrics_dir(Settings(metrics_dir=tmp_path)) == str(tmp_path)
    assert [path.name for path in tmp_path.iterdir()] == ["notes.txt"]


# What Gunicorn does in its master: read the config file, load wsgi:app (preload_app),
# and on SIGHUP read the config file again. In a process of its own: it sets the
# metrics directory in the environment and turns the garbage collector off.
SERVER_START = """
import json, os, runpy

first = runpy.run_path("gunicorn.conf.py")
import wsgi
from service.api.metrics import multiprocess_mode
from service.state import EXTENSION_KEY

directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
again = runpy.run_path("gunicorn.conf.py")
print(json.dumps({
    "shared": wsgi.app.extensions[EXTENSION_KEY].settings is first["settings"] is again["settings"],
    "bind": again["bind"],
    "multiprocess": multiprocess_mode(),
    "directory": directory,
    "kept": os.environ["PROMETHEUS_MULTIPROC_DIR"] == directory and os.path.isdir(directory),
}))
"""


def test_the_server_and_the_app_it_loads_share_one_settings_object(demo_store_path: Path) -> None:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("SERVICE_") and key not in {"HOST", "PORT", "PROMETHEUS_MULTIPROC_DIR"}
    }
    env.update(SERVICE_MODEL_STORE=str(demo_store_path), PORT="9123", SERVICE_WORKERS="1")
    result = run_in_repo([sys.executable, "-c", SERVER_START], env)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.splitlines()[-1])
    assert seen["shared"] is True
    assert seen["bind"] == ["127.0.0.1:9123"]
    # The directory was set before prometheus_client was imported, and a second
    # reading (SIGHUP) kept it; the master removed its own directory at exit.
    assert seen["multiprocess"] is True
    assert seen["kept"] is True
    assert not Path(seen["directory"]).exists()
