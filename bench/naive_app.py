"""Baseline (b): the tutorial app, Flask with the models loaded at import.

What most first model servers look like: ``request.get_json()``, ``predict`` and
``predict_proba``, ``jsonify``. No validation, no metrics, no logging set-up; it
answers the same document as the service so the two can be compared.

    gunicorn --worker-class gthread --preload bench.naive_app:app
"""

from __future__ import annotations

import numpy as np
from flask import Flask, abort, jsonify, request

from bench.store import MODELS, load, probability_keys

app = Flask(__name__)

models = {name: load(name) for name in MODELS}


def _predict(name: str, rows: list) -> tuple[str, list, list]:
    if name not in models:
        abort(404)
    stored = models[name]
    X = np.asarray(rows, dtype=np.float64)
    labels = stored.estimator.predict(X).tolist()
    keys = probability_keys(stored.estimator.classes_)
    probabilities = [dict(zip(keys, row, strict=True)) for row in stored.estimator.predict_proba(X).tolist()]
    return stored.version, labels, probabilities


@app.post("/v1/models/<name>/predict")
def predict(name: str):
    version, labels, probabilities = _predict(name, [request.get_json()["features"]])
    return jsonify(model=name, model_version=version, prediction=labels[0], probabilities=probabilities[0])


@app.post("/v1/models/<name>/predict/batch")
def predict_batch(name: str):
    version, labels, probabilities = _predict(name, request.get_json()["instances"])
    return jsonify(model=name, model_version=version, predictions=labels, probabilities=probabilities)
