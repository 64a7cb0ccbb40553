"""Service settings, parsed and checked once from environment variables.

Every tunable lives here with its type and default; nothing else in the project
reads or writes ``os.environ``. ``HOST`` and ``PORT`` keep their conventional
names so that platforms which inject them work unchanged, and
``PROMETHEUS_MULTIPROC_DIR`` is prometheus_client's own; everything else uses the
``SERVICE_`` prefix.

The server and the app it serves share one ``Settings``: ``gunicorn.conf.py``
and ``wsgi.py`` both take ``process_settings()``. The two process-level duties of
the server's config file are here too, because they are about the environment:
knowing its first reading (``first_config_reading``) and pointing
prometheus_client at the workers' metrics directory (``share_metrics_dir``).
"""

from __future__ import annotations

import atexit
import dataclasses
import functools
import glob
import os
import re
import shutil
import tempfile
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


def _milliseconds(raw: str) -> float:
    value = float(raw)
    if not 0 <= value <= 1000:
        raise ValueError("must be a number of milliseconds from 0 to 1000")
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


# How values outside the range seen in training are treated (service.models.rules).
RANGE_POLICIES = ("flag", "reject")


def _range_policy(raw: str) -> str:
    policy = raw.strip().lower()
    if policy not in RANGE_POLICIES:
        raise ValueError(f"must be one of {', '.join(RANGE_POLICIES)}")
    return policy


# What predicts: a model's compiled ONNX artifact or its pickled estimator (service.models.onnx_runtime).
RUNTIMES = ("auto", "sklearn", "onnx")


def _runtime(raw: str) -> str:
    runtime = raw.strip().lower()
    if runtime not in RUNTIMES:
        raise ValueError(f"must be one of {', '.join(RUNTIMES)}")
    return runtime


def _rate_limits(raw: str) -> str:
    """``100/second;2000/minute``: checked with the library that enforces them, kept as written."""
    from limits import parse_many  # only when a limit is set

    text = raw.strip()
    try:
        parse_many(text)
    except ValueError:
        raise ValueError("expected limits such as '100/second' or '100/second;2000/minute'") from None
    return text


# Rate limit storages: in this process's memory, or Redis (service.api.limits).
REDIS_SCHEMES = ("redis://", "rediss://", "redis+unix://")


def _storage_uri(raw: str) -> str:
    uri = raw.strip()
    if not uri.startswith(("memory://", *REDIS_SCHEMES)):
        # The value may hold a password: it is not repeated in the message.
        raise ValueError("must start with memory://, redis://, rediss:// or redis+unix://")
    return uri


_ORIGIN = re.compile(r"https?://[A-Za-z0-9.\-\[\]:]+")


def _origins(raw: str) -> tuple[str, ...]:
    """``https://app.example.com,http://localhost:3000``: exact origins, no wildcard."""
    origins = _name_list(raw)
    for origin in origins:
        if not _ORIGIN.fullmatch(origin):
            raise ValueError(
                f"{origin!r} is not an origin: write scheme://host[:port], without a path or '*'"
            )
    return origins


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
    # "flag": a value outside the range seen in training is served with a
    # warning; "reject": it is refused (service.models.rules).
    range_policy: str = "flag"
    # "auto": a model with a verified ONNX artifact is served by onnxruntime,
    # others by scikit-learn; "sklearn": every model by scikit-learn; "onnx":
    # compiled models only, the others are not ready.
    runtime: str = "auto"

    # False: only .skops artifacts are loaded, never a pickle (which runs code when loaded).
    allow_pickle: bool = True

    # Request limits: a few MiB of JSON is thousands of rows, far more than an
    # interactive caller sends, yet small enough that one request cannot pin a worker.
    max_body_bytes: int = 4 * MIB
    max_batch_rows: int = 5000
    # A JSON body deeper than this (the top value is level 1) or with a longer string
    # (its bytes as sent, backslash escapes aside) is refused before it is parsed. A prediction needs 3
    # levels and strings as long as a category or a feature name.
    max_json_depth: int = 32
    max_string_bytes: int = 1024

    # Micro-batching (service.models.batching): concurrent small requests to one
    # model version share one vectorised model call. A request on an idle
    # model never waits; a gathered call holds at most batch_max_rows rows and
    # waits at most batch_max_wait_ms for requests still being validated to join
    # it. A request with more rows than batch_max_rows calls the model alone.
    batching: bool = True
    batch_max_rows: int = 256
    batch_max_wait_ms: float = 2.0

    # Server process (read by gunicorn.conf.py)
    host: str = "127.0.0.1"
    port: int = 8000
    # The Open Inference Protocol over gRPC, served by every worker on this port
    # (service.v2.grpc_server); off when None.
    grpc_port: int | None = None
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    # Requests waiting for a gathered model call hold a thread each, and such a
    # thread costs little (its stack is reserved, not used): enough of them that
    # a worker can gather dozens of concurrent requests into one call.
    threads: int = 32
    model_threads: int = 1
    timeout: int = 30
    graceful_timeout: int = 30
    max_requests: int = 10000
    max_requests_jitter: int = 1000
    log_level: str = "INFO"
    # One JSON line per request on stdout, written by the app (service.access_log).
    access_log: bool = True

    # API keys (service.keyring): off when None. On, every route asks for a key
    # but the probes (/health, /ready), /metrics and the docs and pages, each of
    # which its own setting can protect too.
    api_keys_file: Path | None = None
    protect_metrics: bool = False
    protect_docs: bool = False

    # Rate limits (service.api.limits): off while empty. Counted per API client
    # (per address without keys), in memory per worker unless the storage is Redis.
    rate_limit: str = ""  # prediction routes, e.g. "100/second;2000/minute"
    rate_limit_read: str = ""  # metadata, docs, pages
    rate_limit_rows: str = ""  # rows on the JSON prediction routes
    rate_limit_storage: str = "memory://"

    # Browser origins allowed to call the API (CORS); none by default.
    cors_origins: tuple[str, ...] = ()

    # Observability
    prediction_log: Path | None = None  # one JSON line per predicted row; off when None
    # The operator's directory for the workers' metric samples; None: the server
    # makes its own (see share_metrics_dir).
    metrics_dir: Path | None = None

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
                shown = variable if variable in _SECRET_VARIABLES else f"{variable}={raw!r}"
                raise ConfigError(f"{shown} is not valid: {error}") from None
        values.update(overrides)
        settings = cls(**values)
        if settings.grpc_port is not None and settings.grpc_port == settings.port:
            raise ConfigError(
                f"SERVICE_GRPC_PORT={settings.grpc_port} is the HTTP port (PORT): give gRPC its own"
            )
        return settings

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    @property
    def bind(self) -> str:
        return f"{self._host}:{self.port}"

    @property
    def grpc_bind(self) -> str | None:
        return None if self.grpc_port is None else f"{self._host}:{self.grpc_port}"

    @property
    def _host(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host


METRICS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"

_ENVIRONMENT: dict[str, tuple[str, Callable[[str], Any]]] = {
    "SERVICE_MODEL_STORE": ("model_store", lambda raw: Path(raw.strip())),
    "SERVICE_MODELS": ("models", _name_list),
    "SERVICE_MODEL_VERSIONS": ("model_versions", _version_pins),
    "SERVICE_DEFAULT_MODEL": ("default_model", str.strip),
    "SERVICE_STRICT_VERSIONS": ("strict_versions", _boolean),
    "SERVICE_RANGE_POLICY": ("range_policy", _range_policy),
    "SERVICE_RUNTIME": ("runtime", _runtime),
    "SERVICE_ALLOW_PICKLE": ("allow_pickle", _boolean),
    "SERVICE_MAX_BODY_BYTES": ("max_body_bytes", _positive_int),
    "SERVICE_MAX_BATCH_ROWS": ("max_batch_rows", _positive_int),
    "SERVICE_MAX_JSON_DEPTH": ("max_json_depth", _positive_int),
    "SERVICE_MAX_STRING_BYTES": ("max_string_bytes", _positive_int),
    "SERVICE_BATCHING": ("batching", _boolean),
    "SERVICE_BATCH_MAX_ROWS": ("batch_max_rows", _positive_int),
    "SERVICE_BATCH_MAX_WAIT_MS": ("batch_max_wait_ms", _milliseconds),
    "HOST": ("host", str.strip),
    "PORT": ("port", _port),
    "SERVICE_GRPC_PORT": ("grpc_port", _port),
    "SERVICE_WORKERS": ("workers", _positive_int),
    "SERVICE_THREADS": ("threads", _positive_int),
    "SERVICE_MODEL_THREADS": ("model_threads", _positive_int),
    "SERVICE_TIMEOUT": ("timeout", _positive_int),
    "SERVICE_GRACEFUL_TIMEOUT": ("graceful_timeout", _positive_int),
    "SERVICE_MAX_REQUESTS": ("max_requests", _non_negative_int),
    "SERVICE_MAX_REQUESTS_JITTER": ("max_requests_jitter", _non_negative_int),
    "SERVICE_LOG_LEVEL": ("log_level", _log_level),
    "SERVICE_ACCESS_LOG": ("access_log", _boolean),
    "SERVICE_PREDICTION_LOG": ("prediction_log", lambda raw: Path(raw.strip())),
    "SERVICE_API_KEYS_FILE": ("api_keys_file", lambda raw: Path(raw.strip())),
    "SERVICE_PROTECT_METRICS": ("protect_metrics", _boolean),
    "SERVICE_PROTECT_DOCS": ("protect_docs", _boolean),
    "SERVICE_CORS_ORIGINS": ("cors_origins", _origins),
    "SERVICE_RATE_LIMIT": ("rate_limit", _rate_limits),
    "SERVICE_RATE_LIMIT_READ": ("rate_limit_read", _rate_limits),
    "SERVICE_RATE_LIMIT_ROWS": ("rate_limit_rows", _rate_limits),
    "SERVICE_RATE_LIMIT_STORAGE": ("rate_limit_storage", _storage_uri),
    # Not stripped: prometheus_client uses the value as it is, and this must name
    # the same directory.
    METRICS_DIR_VARIABLE: ("metrics_dir", Path),
    "SERVICE_DEMO": ("demo", _boolean),
    "SERVICE_MAX_UPLOAD_BYTES": ("max_upload_bytes", _positive_int),
    "SERVICE_MAX_CSV_COLUMNS": ("max_csv_columns", _positive_int),
}


# Values that may hold a password (a Redis URL): never repeated in a message.
_SECRET_VARIABLES = frozenset({"SERVICE_RATE_LIMIT_STORAGE"})


@functools.cache
def process_settings() -> Settings:
    """This process's settings, parsed from the environment on first use and shared after.

    ``gunicorn.conf.py`` and ``wsgi.py`` both take them, so the server's settings
    are the app's, the very same object. Tests build their own ``Settings``.
    """
    return Settings.from_env()


_config_file_read = False


def first_config_reading() -> bool:
    """True the first time this process reads the server's config file, False after.

    Gunicorn reads ``gunicorn.conf.py`` again, in the same master process, on
    SIGHUP; work that must happen once per server is done on the first reading
    only. The config file runs afresh each time, so the memory of earlier
    readings lives here, in a module imported once per process.
    """
    global _config_file_read
    first = not _config_file_read
    _config_file_read = True
    return first


def share_metrics_dir(settings: Settings) -> str:
    """Point prometheus_client at the directory the workers share; returns it. Once per server.

    Workers are separate processes; prometheus_client sums their samples from
    files in one directory, named by ``PROMETHEUS_MULTIPROC_DIR``, and picks that
    storage when it is first imported: call this before anything imports it (this
    module does not; ``service/__init__.py`` imports nothing for this reason).
    The operator's own directory is cleaned of a previous run's files; otherwise
    a fresh one is made, and removed when this process exits, however it exits.
    A reload (SIGHUP) keeps the directory and its files: counters go on from
    where they were.
    """
    if settings.metrics_dir is not None:
        for stale in glob.glob(os.path.join(settings.metrics_dir, "*.db")):
            os.remove(stale)
        return str(settings.metrics_dir)
    directory = tempfile.mkdtemp(prefix="sklearn-service-metrics-")
    os.environ[METRICS_DIR_VARIABLE] = directory
    # atexit rather than a server hook (on_exit): it also runs when the start
    # fails (a bad setting, a port in use) before any hook would.
    atexit.register(_remove_own_metrics_dir, directory, os.getpid())
    return directory


def _remove_own_metrics_dir(directory: str, owner: int) -> None:
    # Workers are forked from the master and run its exit handlers too.
    if os.getpid() == owner:
        shutil.rmtree(directory, ignore_errors=True)
