"""Explanatory baseline "flask arrays": the bare app's work inside one Flask route.

    gunicorn --worker-class gthread --preload bench.flask_arrays_app:app

Exactly what ``bench.bare_app`` does to a body (``orjson.loads``, one
``predict_proba``, ``orjson.dumps`` of the arrays), called from a Flask view on
the service's transport settings: no validation, no metrics, no logging, no
request ids. Its ratio to the bare app is the most any Flask app can keep of
the bare app's rows/s; what the service keeps below it is the price of its own
checks and records.
"""

from __future__ import annotations

from flask import Flask, Response, abort, request

from bench.bare_app import ROUTES, _answer

app = Flask(__name__)


@app.post("/v1/models/<name>/predict")
@app.post("/v1/models/<name>/predict/batch")
def predict(name: str) -> Response:
    model = ROUTES.get(request.path)
    if model is None:
        abort(404)
    return Response(_answer(model, request.get_data()), mimetype="application/json")
