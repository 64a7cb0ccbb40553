"""Baseline "tutorial": the Flask app model-serving tutorials write, served the way they serve it.

    gunicorn -w 2 --preload bench.tutorial_app:app

Gunicorn's default sync workers (one request at a time per worker, the connection
closed after each answer), ``request.get_json()``, ``predict`` and ``predict_proba``
on the row as sent, ``jsonify`` of plain lists. No validation, no metrics, no
logging set-up: what a user compares a model service with.
"""

from __future__ import annotations

from flask import Flask, abort, jsonify, request

from bench.store import MODELS, load

app = Flask(__name__)

models = {name: load(name).estimator for name in MODELS}


def _model(name: str):
    if name not in models:
        abort(404)
    return models[name]


@app.post("/v1/models/<name>/predict")
def predict(name: str):
    model = _model(name)
    features = [request.get_json()["features"]]
    prediction = model.predict(features)[0]
    probabilities = model.predict_proba(features)[0]
    return jsonify({"prediction": prediction.item(), "probabilities": probabilities.tolist()})


@app.post("/v1/models/<name>/predict/batch")
def predict_batch(name: str):
    model = _model(name)
    rows = request.get_json()["instances"]
    predictions = model.predict(rows)
    probabilities = model.predict_proba(rows)
    return jsonify({"predictions": predictions.tolist(), "probabilities": probabilities.tolist()})
