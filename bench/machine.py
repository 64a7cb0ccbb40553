"""What the figures were measured on: machine, library versions, the BLAS in use."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path

PACKAGES = (
    "flask",
    "gunicorn",
    "marshmallow",
    "numpy",
    "scipy",
    "scikit-learn",
    "orjson",
    "joblib",
    "onnxruntime",
    "skl2onnx",
)
# Read, never set: they change which kernel OpenBLAS picks, and so the figures.
BLAS_VARIABLES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model", "cpu model"):
            return value.strip()
    return platform.processor() or "unknown"


def package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def blas_pools() -> list[str]:
    """The native thread pools this process has loaded, as threadpoolctl sees them."""
    import numpy  # noqa: F401  (loads the BLAS)
    import sklearn  # noqa: F401  (loads OpenMP)
    from threadpoolctl import threadpool_info

    pools = []
    for info in threadpool_info():
        pools.append(
            f"{info.get('internal_api')} {info.get('version')} "
            f"(kernel {info.get('architecture', 'n/a')}, {info.get('num_threads')} threads, "
            f"{os.path.basename(info.get('filepath', ''))})"
        )
    return pools


def wrk_version() -> str:
    try:
        done = subprocess.run(["wrk", "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "not found"
    first = (done.stdout or done.stderr).splitlines()[:1]
    return first[0].split(" Copyright")[0].removeprefix("wrk ").strip() if first else "unknown"


def h2load_version() -> str:
    try:
        done = subprocess.run(["h2load", "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "not found"
    first = done.stdout.splitlines()[:1]
    return first[0].removeprefix("h2load ").strip() if first else "unknown"


def header_lines() -> list[tuple[str, str]]:
    lines = [
        ("Date (UTC)", datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")),
        ("Cores", str(os.cpu_count())),
        ("CPU", cpu_model()),
        ("Python", platform.python_version()),
    ]
    lines += [(name, package_version(name)) for name in PACKAGES]
    lines.append(("wrk version", wrk_version()))
    lines.append(("h2load version", h2load_version()))
    lines += [("Native pool", pool) for pool in blas_pools()]
    for variable in BLAS_VARIABLES:
        if variable in os.environ:
            lines.append((variable, os.environ[variable]))
    return lines
