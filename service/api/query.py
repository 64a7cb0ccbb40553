"""The query string of the prediction routes that score several rows: ``on_error``, ``format`` for
JSON batches and ``stream`` for CSV files.

``on_error`` says what an invalid row does to the request: ``fail`` refuses the
whole request (422, every bad field named), ``row`` answers each good row and
sets each bad one aside with its reason. The JSON batch routes default to
``fail``, the CSV route to ``row``. ``format=compact`` answers a JSON batch with
the class labels once and the probabilities as a matrix, rather than one object
per row: a third of the work of answering a large batch. An unknown value or parameter, or one given
twice, is refused with a problem naming it, as a bad body field would be.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from flask import Request
from marshmallow import RAISE, Schema, ValidationError, fields, validate

from service.errors import InvalidInput

ON_ERROR_CHOICES = ("row", "fail")
FORMAT_CHOICES = ("objects", "compact")


def _on_error_field(default: str, description: str) -> fields.String:
    return fields.String(
        load_default=default,
        validate=validate.OneOf(ON_ERROR_CHOICES),
        metadata={"description": description},
    )


class BatchQuery(Schema):
    """The query string of the JSON batch routes."""

    class Meta:
        unknown = RAISE

    on_error = _on_error_field(
        "fail",
        "`fail` (the default): one invalid row refuses the whole batch with a 422 naming every bad "
        "field. `row`: the valid rows are predicted; each invalid row gets `null` in `predictions` "
        "(and `probabilities`), and `errors` names its bad fields by row index.",
    )
    format = fields.String(
        load_default="objects",
        validate=validate.OneOf(FORMAT_CHOICES),
        metadata={
            "description": "`objects` (the default): `probabilities` holds one object per row, keyed by "
            "class. `compact`: `classes` lists the class labels once and `probabilities` holds one list "
            "per row in that order; a model with several targets lists them once in `targets` and answers "
            "each row with a list of values in that order. The same numbers, in a smaller answer that is "
            "quicker to build and to read."
        },
    )


class CsvQuery(Schema):
    """The query string of the CSV route."""

    class Meta:
        unknown = RAISE

    on_error = _on_error_field(
        "row",
        "`row` (the default): every good row is predicted and the answer is streamed as it is scored; "
        "a bad row is answered with its reason in the `error` column. `fail`: one invalid row anywhere "
        "in the file refuses it whole with a 422 naming the bad fields by line; the answer is sent "
        "once the whole file is read.",
    )
    stream = fields.Boolean(
        load_default=True,
        metadata={
            "description": "With `on_error=row`: `true` (the default) sends the answer as it is scored, "
            "while the file is still being sent, so the client must read as it sends. `false` sends it "
            "once the whole file is read, the same rows, with a `Content-Length`: for clients that send "
            "the whole request before reading the answer (browsers' `fetch`, Python's `requests`)."
        },
    )


_BATCH = BatchQuery()
_CSV = CsvQuery()


def on_error(request: Request, *, csv: bool) -> str:
    """The request's ``on_error`` (its default if absent); raises ``InvalidInput`` naming a bad parameter."""
    return parsed_query(request, csv=csv)["on_error"]


def parsed_query(request: Request, *, csv: bool) -> Mapping[str, Any]:
    """The request's query parameters, defaults filled in; raises ``InvalidInput`` naming a bad one.

    Clients send the same few query strings again and again: each one's verdict
    is kept (a bad one is judged again each time, and few are kept).
    """
    key = (request.query_string, csv)
    found = _KNOWN.get(key)
    if found is None:
        found = _parse(request, csv=csv)
        if len(_KNOWN) >= _KNOWN_MAX:
            _KNOWN.clear()
        _KNOWN[key] = found
    return found


_KNOWN: dict[tuple[bytes, bool], Mapping[str, Any]] = {}
_KNOWN_MAX = 64


def _parse(request: Request, *, csv: bool) -> Mapping[str, Any]:
    repeated = {
        name: ["Give this parameter once."] for name, values in request.args.lists() if len(values) > 1
    }
    if repeated:
        raise InvalidInput("The query string repeats a parameter; see 'errors'.", repeated)
    try:
        loaded = (_CSV if csv else _BATCH).load(request.args.to_dict())
    except ValidationError as error:
        raise InvalidInput(
            "The query string is invalid; see 'errors' for each parameter.", error.normalized_messages()
        ) from None
    return MappingProxyType(loaded)  # shared by the requests that send the same string
