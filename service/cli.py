"""``flask --app wsgi models ...``: manage the model store from the command line.

``models compile`` (and ``models add --onnx``) convert a model to ONNX; see
``service.models.onnx_compile``.

These commands work on the store named by ``SERVICE_MODEL_STORE``, the same one
the service serves from. The app builds over an empty store (the server is what
refuses to start on one), so ``models add`` and ``models demo`` can fill it.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import warnings
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import joblib
import pandas as pd
import skops.io as skops_io
from flask import Flask
from flask.cli import AppGroup
from marshmallow import ValidationError
from sklearn.exceptions import InconsistentVersionWarning

from service.errors import InvalidInput, ModelLoadError, PredictionFailed
from service.keys_cli import keys
from service.models import ModelStore, demo
from service.models.core import validated
from service.models.evaluation import with_held_out_metrics
from service.models.introspect import IntrospectionError, adjust_features, check_rows, describe_estimator
from service.models.json_rows import JsonRows
from service.models.manifest import NAME_PATTERN, Artifact, Manifest
from service.models.onnx_artifact import OnnxArtifact
from service.models.onnx_compile import compile_version
from service.models.registry import prediction_problem, warm_up
from service.models.store import bounded
from service.models.versions import runtime_versions
from service.state import state

models = AppGroup(
    "models", help="List, add, compile and verify models in the model store; train the demo models."
)


def _store() -> ModelStore:
    return state().store


def _valid_name(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not NAME_PATTERN.fullmatch(value):
        raise click.BadParameter("use 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit")
    return value


def _limits(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> dict[str, tuple[float | None, float | None]]:
    """``COL=LOW:HIGH`` options as {COL: (LOW, HIGH)}; an empty LOW or HIGH is no bound."""
    found: dict[str, tuple[float | None, float | None]] = {}
    for value in values:
        column, equals, bounds = value.partition("=")
        low, colon, high = bounds.partition(":")
        try:
            if not (column and equals and colon):
                raise ValueError
            parsed = tuple(None if bound.strip() == "" else float(bound) for bound in (low, high))
            if any(bound is not None and not math.isfinite(bound) for bound in parsed):
                raise ValueError
        except ValueError:
            raise click.BadParameter(f"{value!r}: write COL=LOW:HIGH, e.g. age=0:120 or price=0:") from None
        if parsed[0] is not None and parsed[1] is not None and parsed[0] > parsed[1]:
            raise click.BadParameter(f"{value!r}: LOW must not exceed HIGH")
        found[column.strip()] = (parsed[0], parsed[1])
    return found


@models.command("list")
def list_models() -> None:
    """List every stored model version; '*' marks the one served by default."""
    store = _store()
    names = store.names()
    if not names:
        click.echo(f"{store.root}: no models")
        return
    for name in names:
        versions = store.versions(name)
        if not versions:
            click.echo(f"  {name:<20} {'-':<8} INVALID: {_unlisted(store, name)}")
        for version in versions:
            mark = "*" if version == versions[-1] else " "
            try:
                manifest = store.manifest(name, version)
                summary = (
                    f"{manifest.task:<17} {len(manifest.features):>3} features  "
                    f"sha256 {manifest.artifact.sha256[:12]}  trained {manifest.trained_at or '?'}"
                    + ("" if manifest.onnx is None else f"  onnx {manifest.onnx.status}")
                )
            except ModelLoadError as error:
                summary = f"INVALID: {bounded(error.reason)}"
            except Exception as error:  # one bad model is reported; the listing goes on
                summary = f"INVALID: {bounded(f'{type(error).__name__}: {error}')}"
            click.echo(f"{mark} {name:<20} {version:<8} {summary}")


@models.command("add")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name", required=True, callback=_valid_name, help="Model name (URL-safe).")
@click.option("--version", "version", callback=_valid_name, help="Version label (default: next integer).")
@click.option(
    "--sample",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="CSV of typical input rows: gives feature types, ranges, categories, a typical row.",
)
@click.option(
    "--eval",
    "held_out",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="CSV of held-out rows with the --target column: metrics are measured on it, not on the sample.",
)
@click.option(
    "--target",
    help="Column of --eval (else of --sample) that holds the true labels or values: measures metrics. "
    "A multi-output model: one column per output, comma-separated (a,b), which also name its targets.",
)
@click.option("--description", help="One line about the model.")
@click.option(
    "--nullable",
    multiple=True,
    metavar="COL",
    help="Accept a missing value for this feature (repeatable); found from the sample and estimator.",
)
@click.option(
    "--not-nullable",
    multiple=True,
    metavar="COL",
    help="Refuse a missing value for this feature (repeatable).",
)
@click.option(
    "--limit",
    "limits",
    multiple=True,
    metavar="COL=LOW:HIGH",
    callback=_limits,
    help="Hard limits for a numeric feature (repeatable; LOW or HIGH may be left out): values outside "
    "are refused. Observed ranges only flag.",
)
@click.option(
    "--onnx",
    "compile_onnx",
    is_flag=True,
    help="Also compile it to ONNX (see 'models compile'); if that is refused, it is added all the same "
    "and served by scikit-learn.",
)
@click.option(
    "--format",
    "artifact_format",
    type=click.Choice(["joblib", "skops"]),
    help="How the store keeps it: joblib (a pickle) or skops (loads without running code). "
    "Default: skops for a .skops file, else joblib.",
)
def add_model(
    path: Path,
    name: str,
    version: str | None,
    sample: Path | None,
    held_out: Path | None,
    target: str | None,
    description: str | None,
    nullable: tuple[str, ...],
    not_nullable: tuple[str, ...],
    limits: dict[str, tuple[float | None, float | None]],
    compile_onnx: bool,
    artifact_format: str | None,
) -> None:
    """Copy a joblib/pickle (or .skops) file into the store and write its manifest.

    Loading a pickle runs code from it: add only files you trust. From then on
    the service loads it only if its SHA-256 still matches the manifest.
    '--format skops' stores the model as skops, which the service loads with an
    explicit list of trusted types, without running code from the file.
    """
    store = _store()
    artifact_format = artifact_format or ("skops" if path.suffix == ".skops" else "joblib")
    if artifact_format == "joblib" and not store.allow_pickle:
        raise click.UsageError(
            "pickles are not loaded here (SERVICE_ALLOW_PICKLE=false): add it with --format skops"
        )
    version = version or store.next_version(name)
    if target and not (sample or held_out):
        raise click.UsageError("--target needs --sample or --eval")
    if held_out and not target:
        raise click.UsageError("--eval needs --target, the column of the file that holds the true values")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", InconsistentVersionWarning)
        estimator = _read_estimator(path)
    trained_with = runtime_versions()
    for warning in caught:
        if isinstance(warning.message, InconsistentVersionWarning):
            trained_with["sklearn"] = warning.message.original_sklearn_version
    frame = _read_csv(sample) if sample else None
    try:
        manifest = describe_estimator(
            estimator,
            name=name,
            version=version,
            sample=frame,
            target=target,
            measure=not held_out,  # with --eval, the truth is measured on the held-out rows instead
            description=description,
            trained_with=trained_with,
            dataset={"sample": sample.name, "rows": len(frame)} if sample and frame is not None else {},
            trained_at=datetime.fromtimestamp(path.stat().st_mtime, UTC).isoformat(timespec="seconds"),
            sample_name=sample.name if sample else None,
        )
        manifest = adjust_features(manifest, nullable=nullable, not_nullable=not_nullable, limits=limits)
        if held_out and target:
            manifest = with_held_out_metrics(manifest, estimator, _read_csv(held_out), target, held_out.name)
        rows = check_rows(manifest, frame) if frame is not None else []
        directory = _add_artifact(store, path, manifest, estimator, artifact_format)
    except (IntrospectionError, FileExistsError, ValueError) as error:
        raise click.ClickException(str(error)) from None
    except ValidationError as error:
        raise click.ClickException(f"its manifest would be invalid: {error.messages}") from None
    problem, notes = _verify(store, name, version, rows)
    if problem:
        store.remove(name, version)
        raise click.ClickException(f"the stored model failed its check and was removed: {problem}")
    outputs = f", {manifest.outputs} targets" if manifest.targets else ""
    click.echo(
        f"added {name} version {version} ({manifest.task}{outputs}, {len(manifest.features)} features) "
        f"to {directory}"
    )
    if manifest.typical_row is not None and manifest.typical_row.kind == "estimator":
        click.echo(f"typical row: {manifest.typical_row.source}")
    for note in [*_gaps(manifest, sampled=frame is not None), *notes]:
        click.echo(f"warning: {note}", err=True)
    if compile_onnx:
        artifact = compile_version(store, name, version, frame)
        if artifact.verified:
            click.echo(_compiled_summary(artifact))
        else:
            click.echo(f"warning: not compiled to ONNX, served by scikit-learn: {artifact.reason}", err=True)


def _read_estimator(path: Path) -> Any:
    """The estimator in a pickle (which runs its code: the operator trusts it), or in a .skops
    file, whose types must be scikit-learn's, NumPy's or SciPy's."""
    if path.suffix != ".skops":
        try:
            return joblib.load(path)
        except Exception as error:
            raise click.ClickException(
                f"{path} is not a joblib/pickle file this Python can load: {error}"
            ) from None
    try:
        types = skops_io.get_untrusted_types(file=path)
        foreign = [name for name in types if not name.startswith(SKOPS_TRUSTED_MODULES)]
        if foreign:
            raise click.ClickException(
                f"{path} holds types from outside scikit-learn, NumPy and SciPy: {', '.join(foreign)}; "
                "add the pickle you trust with --format skops instead"
            )
        return skops_io.load(path, trusted=types)
    except click.ClickException:
        raise
    except Exception as error:
        raise click.ClickException(f"{path} is not a .skops file this Python can load: {error}") from None


# The modules whose types a .skops file given to 'models add' may hold.
SKOPS_TRUSTED_MODULES = ("sklearn.", "numpy.", "scipy.")


def _add_artifact(
    store: ModelStore, path: Path, manifest: Manifest, estimator: Any, artifact_format: str
) -> Path:
    """Store the artifact as it came (a pickle), or as skops with the types it holds trusted."""
    if artifact_format == "joblib":
        if path.suffix == ".skops":
            raise click.UsageError("a .skops file is stored as skops: leave out --format joblib")
        return store.add(path, manifest)
    data = skops_io.dumps(estimator)
    trusted = tuple(skops_io.get_untrusted_types(data=data))
    manifest = replace(manifest, artifact=Artifact(file=SKOPS_FILE, sha256="0" * 64, trusted=trusted))
    with tempfile.TemporaryDirectory() as scratch:
        converted = Path(scratch) / SKOPS_FILE
        converted.write_bytes(data)
        return store.add(converted, manifest)


SKOPS_FILE = "model.skops"


@models.command("compile")
@click.argument("name", callback=_valid_name)
@click.option("--version", "version", callback=_valid_name, help="Version to compile (default: the latest).")
@click.option(
    "--sample",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="CSV of typical input rows, checked for parity too (beside rows drawn within the ranges).",
)
def compile_model(name: str, version: str | None, sample: Path | None) -> None:
    """Compile a stored model to ONNX, kept only if it answers as the estimator does.

    Labels must be identical and probabilities within 1e-5 on the parity rows;
    then model.onnx is stored beside the pickle, its SHA-256 in the manifest,
    and the service predicts with onnxruntime (SERVICE_RUNTIME=auto). Else the
    manifest records why and scikit-learn serves it; exit 1.
    """
    store = _store()
    frame = _read_csv(sample) if sample else None
    try:
        version = version or store.resolve(name)
        artifact = compile_version(store, name, version, frame)
    except ModelLoadError as error:
        raise click.ClickException(bounded(error.detail)) from None
    if not artifact.verified:
        raise click.ClickException(
            f"{name} version {version} was not compiled and stays served by scikit-learn: {artifact.reason}"
        )
    click.echo(f"{name} version {version}: {_compiled_summary(artifact)}")


def _compiled_summary(artifact: OnnxArtifact) -> str:
    parity = artifact.parity
    return (
        f"compiled to ONNX ({artifact.input_type} input), answers as the estimator does on "
        f"{parity['rows']:,} rows (largest difference {parity['max_difference']:.2g})"
    )


@models.command("verify")
def verify_models() -> None:
    """Check every stored version: hash, load, and one prediction. Exit 1 on any failure."""
    store = _store()
    failures = 0
    checked = 0
    for name in store.names():
        versions = store.versions(name)
        if not versions:
            checked += 1
            failures += 1
            click.echo(f"FAIL {name} -: {_unlisted(store, name)}")
        for version in versions:
            checked += 1
            problem, notes = _verify(store, name, version)
            failures += problem is not None
            click.echo(
                f"{'FAIL' if problem else 'ok  '} {name} {version}" + (f": {problem}" if problem else "")
            )
            for note in notes:
                click.echo(f"     warning: {note}")
    if checked == 0:
        raise click.ClickException(f"{store.root} holds no models")
    if failures:
        raise click.ClickException(f"{failures} of {checked} model versions failed")


@models.command("demo")
@click.option("--force", is_flag=True, help="Retrain version 1 of a demo model already in the store.")
@click.option("--if-empty", is_flag=True, help="Do nothing if the store already holds any model.")
def train_demo_models(force: bool, if_empty: bool) -> None:
    """Train the demo models into the store.

    iris, diabetes and breast_cancer, with fixed seeds, as version 1. A demo
    model already in the store is kept unless --force retrains its version 1;
    --if-empty (used by 'make serve') trains only into a store that holds no
    model at all.
    """
    store = _store()
    names = store.names()
    if if_empty and names:
        click.echo(f"{store.root} holds models ({', '.join(names)}); no demo models trained")
        return
    for model in demo.DEMOS:
        if store.versions(model.name) and not force:
            click.echo(f"{model.name}: already in {store.root}, kept (use --force to retrain)")
            continue
        existing = store.root / model.name / demo.VERSION
        if existing.exists():
            shutil.rmtree(existing)
        path = demo.train(model, store)
        click.echo(f"{model.name}: trained and stored in {path}")


def _verify(
    store: ModelStore, name: str, version: str, rows: list[dict[str, Any]] | None = None
) -> tuple[str | None, tuple[str, ...]]:
    """(why the version fails its check, or None; its load warnings).

    The check is the start-up's: load (hash checked) and warm up on the example
    row, which may fail with only a warning if it is made up. Then ``rows``, rows
    of the sample the model was added with, must predict.
    """
    try:
        model = store.load(name, version)
        warm_up(model)
        if rows:
            model.predict(validated(model.rules, JsonRows(rows)))
    except ModelLoadError as error:
        return bounded(error.reason), ()
    except (InvalidInput, PredictionFailed) as error:
        return bounded(
            f"predicting the first {len(rows or ())} rows of the sample failed: {prediction_problem(error)}"
        ), ()
    except Exception as error:  # any failure of the model itself is the answer here
        return bounded(f"{type(error).__name__}: {error}"), ()
    return None, model.warnings


def _gaps(manifest: Manifest, sampled: bool) -> list[str]:
    """What the manifest could not record without a sample, for whoever adds the model."""
    gaps = []
    if not sampled:
        gaps.append(
            "without --sample the manifest records no ranges, and every numeric feature is a float "
            "that takes any finite number"
        )
    if not manifest.typical_row_known:
        gaps.append(
            "no typical row is known (no --sample, and the estimator keeps no statistics of its inputs): "
            "the check predicted a made-up row, and the model's page says it opens at placeholder values"
        )
    return gaps


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except (ValueError, OSError) as error:  # a parser error, bad UTF-8, an empty file
        raise click.ClickException(f"{path} cannot be read as a CSV file: {error}") from None


def _unlisted(store: ModelStore, name: str) -> str:
    """Why a model that the store names has no versions to show (its directory cannot be listed)."""
    try:
        store.resolve(name)
    except ModelLoadError as error:
        return bounded(error.reason)
    return "its versions vanished while it was listed"


def init_app(app: Flask) -> None:
    app.cli.add_command(models)
    app.cli.add_command(keys)
