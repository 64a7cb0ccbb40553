"""Service settings, parsed and checked once from environment variables.

Every tunable lives here with its type and default; nothing else in the project
reads ``os.environ``. ``HOST`` and ``PORT`` keep their conventional names so that
platforms which inject them work unchanged; everything else uses the ``SERVICE_``
prefix.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MIB = 1024 * 1024


class ConfigError(ValueError):
    """An environment variable holds a value the service cannot use."""


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def _non_negative_int(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError("must be 0 or more")
    return value


def _port(raw: str) -> int:
    value = int(raw)
    if not 1 <= value <= 65535:
        raise ValueError("must be between 1 and 65535")
    return value


def _boolean(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError("must be true or false")


def _name_list(raw: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in raw.split(",") if name.strip())


def _version_pins(raw: str) -> dict[str, str]:
    """Parse ``iris=2,diabetes=1`` into ``{"iris": "2", "diabetes": "1"}``."""
    pins: dict[str, str] = {}
    for item in _name_list(raw):
        name, sep, version = item.partition("=")
        if not sep or not name.strip() or not version.strip():
            raise ValueError(f"expected NAME=VERSION pairs separated by commas, got {item!r}")
        pins[name.strip()] = version.strip()
    return pins


def _log_level(raw: str) -> str:
    level = raw.strip().upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
        raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
    return level


@dataclass(frozen=True)
class Settings:
    """Everything the service can be told from outside, with its default."""

    # Models
    model_store: Path = Path("model_store")
    models: tuple[str, ...] = ()  # empty: serve every model in the store
    model_versions: Mapping[str, str] = field(default_factory=dict)
    default_model: str = "iris"
    strict_versions: bool = False

    # Request limits: a few MiB of JSON is thousands of rows, far more than an
    # interactive caller sends, yet small enough that one request cannot pin a worker.
    max_body_bytes: int = 4 * MIB
    max_batch_rows: int = 5000

    # Server process (read by gunicorn.conf.py)
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    threads: int = 2
    model_threads: int = 1
    timeout: int = 30
    graceful_timeout: int = 30
    max_requests: int = 10000
    max_requests_jitter: int = 1000
    log_level: str = "INFO"

    # Observability
    prediction_log: Path | None = None  # one JSON line per predicted row; off when None

    # People-facing pages and file scoring
    demo: bool = True  # the HTML pages (home, one per model); off: API only
    # A CSV file is scored as it streams, so its size is not bounded by memory;
    # this limit only stops an endless upload.
    max_upload_bytes: int = 512 * MIB
    # A CSV header wider than this is refused: columns cost work on every row,
    # and no model needs thousands of columns passed through.
    max_csv_columns: int = 1000

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``environ`` (default ``os.environ``), then apply overrides."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for variable, (attribute, parse) in _ENVIRONMENT.items():
            raw = environ.get(variable)
            if raw is None or raw.strip() == "":
                continue
            try:
                values[attribute] = parse(raw)
            except ValueError as error:
                raise ConfigError(f"{variable}={raw!r} is not valid: {error}") from None
        values.update(overrides)
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    @property
    def bind(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


_ENVIRONMENT: dict[str, tuple[str, Callable[[str], Any]]] = {
    "SERVICE_MODEL_STORE": ("model_store", lambda raw: Path(raw.strip())),
    "SERVICE_MODELS": ("models", _name_list),
    "SERVICE_MODEL_VERSIONS": ("model_versions", _version_pins),
    "SERVICE_DEFAULT_MODEL": ("default_model", str.strip),
    "SERVICE_STRICT_VERSIONS": ("strict_versions", _boolean),
    "SERVICE_MAX_BODY_BYTES": ("max_body_bytes", _positive_int),
    "SERVICE_MAX_BATCH_ROWS": ("max_batch_rows", _positive_int),
    "HOST": ("host", str.strip),
    "PORT": ("port", _port),
    "SERVICE_WORKERS": ("workers", _positive_int),
    "SERVICE_THREADS": ("threads", _positive_int),
    "SERVICE_MODEL_THREADS": ("model_threads", _positive_int),
    "SERVICE_TIMEOUT": ("timeout", _positive_int),
    "SERVICE_GRACEFUL_TIMEOUT": ("graceful_timeout", _positive_int),
    "SERVICE_MAX_REQUESTS": ("max_requests", _non_negative_int),
    "SERVICE_MAX_REQUESTS_JITTER": ("max_requests_jitter", _non_negative_int),
    "SERVICE_LOG_LEVEL": ("log_level", _log_level),
    "SERVICE_PREDICTION_LOG": ("prediction_log", lambda raw: Path(raw.strip())),
    "SERVICE_DEMO": ("demo", _boolean),
    "SERVICE_MAX_UPLOAD_BYTES": ("max_upload_bytes", _positive_int),
    "SERVICE_MAX_CSV_COLUMNS": ("max_csv_columns", _positive_int),
}
