"""Scoring a CSV file: ``POST /v1/models/<name>/predict/csv``.

The file is read and scored in chunks of rows (one vectorised validation and
one model call per chunk), so its size is bounded by ``max_upload_bytes``, not
by memory or ``max_batch_rows``. Results are written chunk by chunk to a spool
(memory up to a few MiB, then an anonymous temporary file) and sent once the
upload has been read: HTTP/1.1 clients (browsers' ``fetch``, ``requests``,
``curl``) read no response before they have sent the whole request, so a
server that wrote a large answer while still reading the upload would block on
a full socket and never finish reading. Sending after the upload also means
that every fault of the file as a whole, wherever it is, is a problem response,
never a truncated CSV.
"""

from __future__ import annotations

import io
import itertools
import tempfile
import time
from dataclasses import dataclass
from typing import IO, Any

import numpy as np
from flask import Blueprint, g, request
from flask.wrappers import Response
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.wsgi import wrap_file

from service.api import state
from service.api.csv_reading import CsvReader, quote
from service.api.csv_upload import (
    CSV_MEDIA_TYPE,
    READ_SIZE,
    FileFault,
    UploadBody,
    UploadTooLarge,
    open_source,
)
from service.api.metrics import metrics
from service.api.openapi import documented
from service.api.problems import problem
from service.api.schemas import probability_keys
from service.errors import InvalidInput, MalformedRequest, PredictionFailed
from service.models import LoadedModel
from service.models.frame_validation import CellValidator
from service.models.inputs import ROW_ERROR_KEY

bp = Blueprint("csv_predict", __name__)

CHUNK_ROWS = 10_000  # rows per validation and model call
LINE_BREAK = "\r\n"  # in the answer, as RFC 4180 has it
SPOOL_MEMORY_BYTES = 4 * 1024 * 1024  # answers larger than this go to a temporary file
MAX_LISTED_LINES = 50  # bad lines named in a 422
_DELIMITERS = {";": "semicolons", "\t": "tabs", "|": "vertical bars"}


@bp.post("/v1/models/<name>/predict/csv")
@documented(
    "Predict a CSV file",
    media_type=CSV_MEDIA_TYPE,
    errors=(400, 404, 413, 415, 422, 503),
    parameters={"name": {"examples": ["iris"]}},
    request_body={
        "required": True,
        "content": {
            CSV_MEDIA_TYPE: {"schema": {"type": "string"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
        },
    },
)
def predict_csv(name: str) -> Response:
    """Scores a whole CSV file and answers with the file plus its predictions.

    **Request body**: the file as `text/csv` (UTF-8, a byte-order mark allowed), or as
    `multipart/form-data` with the file in a field named `file`. Comma-separated, quoted
    as in RFC 4180. The first line is a header naming the columns: in any order, every
    feature of the model among them (names compared without surrounding spaces); other
    columns are passed through. Cells follow the manifest (`GET /v1/models/{name}`):
    numbers as decimal text, integers without a fraction (`3` or `3.0`), booleans as
    `true`/`false` (any case) or `1`/`0`, categories exactly as listed; an empty cell is
    a missing value, NaN and infinities are refused. Blank lines are skipped. Up to
    `SERVICE_MAX_UPLOAD_BYTES` (default 512 MiB); the number of rows is not limited.

    **Answer**: `text/csv`, a download named `NAME-predictions.csv`, sent once the whole
    file is read and scored (in chunks of 10,000 lines, one model call each): every input
    column as sent, then `prediction`, then `probability_LABEL` per class for classifiers
    with probabilities, then `error`, empty on good rows. A header-only file gets the
    header line alone.

    **Errors**: if a row in the first 10,000 lines after the header is invalid, nothing
    is predicted: 422, with `errors` naming each bad field by line (`"line 3": {...}`; the
    header is line 1; at most 50 lines). A bad row further on keeps its place in the
    answer with an empty prediction and `line N: field: message` in `error`. A file that
    cannot be read (empty, missing or repeated feature columns, another delimiter, broken
    quoting, a line over 8 MiB) is a 422 wherever the fault is, a header that is not
    UTF-8 a 400, an upload over the limit a 413: never a truncated answer."""
    current = state()
    model = current.registry.get(name)  # one snapshot for the whole request
    g.model, g.model_version = model.name, model.version
    request.environ["service.model"], request.environ["service.model_version"] = model.name, model.version
    limit = current.settings.max_upload_bytes
    request.max_content_length = limit
    try:
        body = UploadBody(request)
        source = open_source(request, body)
        try:
            spool, rows = _score_file(model, source)
        except (InvalidInput, MalformedRequest, PredictionFailed):
            body.drain()  # so that a client still sending sees this answer, not a reset
            raise
        body.drain()
    except UploadTooLarge:
        return _too_large(limit)
    except RequestEntityTooLarge:  # Content-Length over the limit
        return _too_large(limit)
    metrics().rows_per_request.labels(model.name).observe(rows)
    return Response(
        spool.body(request.environ),
        mimetype=CSV_MEDIA_TYPE,
        headers={
            "Content-Disposition": f'attachment; filename="{model.name}-predictions.csv"',
            "Content-Length": str(spool.size),
        },
        direct_passthrough=True,
    )


def _too_large(limit: int) -> Response:
    return problem(
        413,
        "request-entity-too-large",
        "Request Entity Too Large",
        f"The upload is larger than the limit of {limit} bytes.",
    )


# --- Scoring ----------------------------------------------------------------------


@dataclass
class _Chunk:
    cells: np.ndarray  # rows x header width, object array of str
    texts: list[str]  # each row's text as sent (cells padded or cut to the header's width)
    lines: np.ndarray  # the line on which each row starts
    row_errors: dict[int, str]  # row index -> a fault of the whole row (cell count, encoding)


@dataclass
class _Checked:
    valid: np.ndarray  # per row of the chunk
    matrix: np.ndarray  # the valid rows, for the model
    errors: dict[int, dict[str, list[str]]]  # row index -> field -> messages


class _Scorer:
    """Reads a CSV file in chunks, validates and predicts each chunk."""

    def __init__(self, model: LoadedModel, source: IO[bytes]) -> None:
        self.model = model
        self._reader = CsvReader(source)
        self._validator = CellValidator(model.manifest)
        self._classes = model.manifest.classes or ()
        self._labels = {
            label: quote(text)
            for label, text in zip(self._classes, probability_keys(self._classes), strict=True)
        }
        self._labels_as_they_are = all(
            isinstance(label, str) and quote(label) == label for label in self._classes
        )
        self._width = 0
        self.rows = 0

    def header(self) -> tuple[str, list[int]]:
        """The header line as sent, and the column of each feature; 422 if a feature is missing."""
        block = self._reader.block(1)
        if block is None:
            raise InvalidInput(
                "The file is empty; its first line must be a header naming the columns.",
                {"line 1": {ROW_ERROR_KEY: ["Missing header line."]}},
            )
        line = int(block.starts[0])
        if block.bad_lines:
            raise MalformedRequest(f"The header (line {line}) is not valid UTF-8; send the file as UTF-8.")
        header = block.rows[0] if block.rows is not None else block.texts[0].split(",")
        self._width = len(header)
        names = [cell.strip() for cell in header]
        features = self.model.manifest.feature_names
        problems: dict[str, list[str]] = {}
        for feature in features:
            count = names.count(feature)
            if count == 0:
                problems[feature] = ["No column of this name in the header."]
            elif count > 1:
                problems[feature] = [f"The header names this column {count} times."]
        missing = [feature for feature in features if feature not in names]
        if missing:
            detail = (
                f"The header (line {line}) lacks the column{'s' if len(missing) > 1 else ''} "
                f"{', '.join(missing)}; it must name every feature of the model: {', '.join(features)}."
            )
            raise InvalidInput(detail + _delimiter_hint(header), {f"line {line}": problems})
        if problems:
            raise InvalidInput(
                f"The header (line {line}) names a feature column more than once: {', '.join(problems)}.",
                {f"line {line}": problems},
            )
        return block.texts[0], [names.index(feature) for feature in features]

    def chunk(self) -> _Chunk | None:
        """The next CHUNK_ROWS lines' rows (fewer if they hold CHUNK_BYTES); None at the end."""
        block = self._reader.block(CHUNK_ROWS)
        if block is None:
            return None
        width = self._width
        texts = block.texts
        row_errors: dict[int, str] = {}
        if block.rows is None:  # unquoted: cells are what lies between commas
            commas = np.fromiter(
                map(str.count, texts, itertools.repeat(",")), dtype=np.int64, count=len(texts)
            )
            for index in np.flatnonzero(commas != width - 1).tolist():
                cells = texts[index].split(",")
                row_errors[index] = _cell_count_error(len(cells), width)
                texts[index] = ",".join((cells + [""] * width)[:width])
            flat = ",".join(texts).split(",")
            cells = np.array(flat, dtype=object).reshape(len(texts), width)
        else:
            rows = block.rows
            for index, row in enumerate(rows):
                if len(row) != width:
                    row_errors[index] = _cell_count_error(len(row), width)
                    rows[index] = (row + [""] * width)[:width]
                    texts[index] = ",".join(map(quote, rows[index]))
            cells = np.empty((len(rows), width), dtype=object)
            cells[:] = rows
        for bad in block.bad_lines:
            index = int(np.searchsorted(block.starts, bad, side="right")) - 1
            if index >= 0:
                row_errors[index] = f"Line {bad} is not valid UTF-8; send the file as UTF-8."
        self.rows += len(texts)
        return _Chunk(cells, texts, block.starts, row_errors)

    def check(self, chunk: _Chunk, columns: list[int]) -> _Checked:
        """Validate the chunk's feature cells, vectorised; whole-row faults count too."""
        check = self._validator.validate(chunk.cells[:, columns])
        valid, matrix = check.valid, check.matrix
        errors: dict[int, dict[str, list[str]]] = dict(check.errors)
        if chunk.row_errors:
            whole_row = np.zeros(len(valid), dtype=bool)
            for index, message in chunk.row_errors.items():
                whole_row[index] = True
                errors[index] = {ROW_ERROR_KEY: [message]}
            matrix = matrix[~whole_row[valid]]
            valid = valid & ~whole_row
        return _Checked(valid, matrix, errors)

    def predict(self, checked: _Checked) -> list[list[str]]:
        """One model call for the chunk's valid rows: its output columns as text, empty on invalid rows."""
        model = self.model
        recorded = metrics()
        rows = len(checked.valid)
        good = np.flatnonzero(checked.valid)
        if checked.errors:
            recorded.predictions.labels(model.name, model.version, "invalid").inc(len(checked.errors))
        if not len(good):
            return [[""] * rows for _ in range(1 + (len(self._classes) if model.has_probabilities else 0))]
        started = time.perf_counter()
        try:
            prediction = model.predict(checked.matrix)
        except PredictionFailed:
            recorded.predictions.labels(model.name, model.version, "error").inc(len(good))
            raise
        recorded.prediction_duration.labels(model.name).observe(time.perf_counter() - started)
        recorded.predictions.labels(model.name, model.version, "success").inc(len(good))
        audit = state().audit
        if audit is not None:
            audit.record(
                g.request_id,
                model.name,
                model.version,
                model.manifest.feature_names,
                checked.matrix,
                prediction,
            )
        values = prediction.values.tolist()
        if model.manifest.task == "regression":
            texts = list(map(repr, values))  # the shortest text that reads back as the same float
        elif self._labels_as_they_are:
            texts = values
        else:
            texts = [self._labels.get(value) or quote(str(value)) for value in values]
        outputs = [_spread(texts, good, rows)]
        if prediction.probabilities is not None:
            outputs.extend(
                _spread(list(map(repr, column.tolist())), good, rows) for column in prediction.probabilities.T
            )
        return outputs

    def output_header(self, header: str) -> str:
        names = ["prediction"]
        if self.model.has_probabilities:
            names += [f"probability_{label}" for label in probability_keys(self._classes)]
        return ",".join([header, *map(quote, names), "error"])


def _cell_count_error(cells: int, width: int) -> str:
    return f"The row has {cells} cell{'s' if cells != 1 else ''}; the header has {width}."


def _spread(values: list[str], at: np.ndarray, rows: int) -> list[str]:
    """A column of ``rows`` cells: ``values`` at the rows ``at``, empty elsewhere."""
    if len(at) == rows:
        return values
    column = np.full(rows, "", dtype=object)
    column[at] = values
    return column.tolist()


def _error_text(line: int, fields: dict[str, list[str]]) -> str:
    parts = [
        " ".join(messages) if field == ROW_ERROR_KEY else f"{field}: {' '.join(messages)}"
        for field, messages in fields.items()
    ]
    return f"line {line}: " + "; ".join(parts)


def _delimiter_hint(header: list[str]) -> str:
    if len(header) != 1:
        return ""
    for delimiter, name in _DELIMITERS.items():
        if delimiter in header[0]:
            return (
                f" The header was read as a single column: the file seems to be separated by {name}; "
                "only comma-separated files are read."
            )
    return ""


def _first_chunk_problem(chunk: _Chunk, errors: dict[int, dict[str, list[str]]]) -> InvalidInput:
    bad = sorted(errors)
    listed = {f"line {int(chunk.lines[index])}": errors[index] for index in bad[:MAX_LISTED_LINES]}
    rows = len(chunk.texts)
    detail = (
        f"{len(bad)} of the first {rows} row{'s' if rows != 1 else ''} "
        f"{'are' if len(bad) != 1 else 'is'} invalid, so nothing was predicted; 'errors' names each "
        "bad field by line (the header is line 1)"
    )
    if len(bad) > MAX_LISTED_LINES:
        detail += (
            f". The first {MAX_LISTED_LINES} bad lines are listed; {len(bad) - MAX_LISTED_LINES} more are not"
        )
    return InvalidInput(detail + ".", listed)


class _Spool:
    """Bytes kept in memory up to SPOOL_MEMORY_BYTES, then in an anonymous temporary file."""

    def __init__(self) -> None:
        self._memory = io.BytesIO()
        self._file: IO[bytes] | None = None
        self.size = 0

    def write(self, data: bytes) -> None:
        if self._file is None and self.size + len(data) > SPOOL_MEMORY_BYTES:
            self._file = tempfile.TemporaryFile(prefix="csv-predictions-")  # noqa: SIM115 - the response closes it
            self._file.write(self._memory.getbuffer())
            self._memory = io.BytesIO()
        (self._file or self._memory).write(data)
        self.size += len(data)

    def body(self, environ: dict[str, Any]) -> Any:
        """The content for the response: bytes, or the file wrapped for the WSGI server to send."""
        if self._file is None:
            return self._memory.getvalue()
        self._file.seek(0)
        # Gunicorn's file wrapper sends it with sendfile(); every wrapper closes it at the end.
        return wrap_file(environ, self._file, buffer_size=READ_SIZE)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def _score_file(model: LoadedModel, source: IO[bytes]) -> tuple[_Spool, int]:
    """Score the whole file into a spool; (spool, data rows). Problems raise before anything is sent."""
    scorer = _Scorer(model, source)
    spool = _Spool()
    try:
        try:
            header, columns = scorer.header()
            spool.write((scorer.output_header(header) + LINE_BREAK).encode("utf-8"))
            first = True
            while (chunk := scorer.chunk()) is not None:
                checked = scorer.check(chunk, columns)
                if first and checked.errors:
                    metrics().predictions.labels(model.name, model.version, "invalid").inc(len(chunk.texts))
                    raise _first_chunk_problem(chunk, checked.errors)
                first = False
                outputs = scorer.predict(checked)
                messages = [""] * len(chunk.texts)
                for index, fields in checked.errors.items():
                    messages[index] = quote(_error_text(int(chunk.lines[index]), fields))
                text = LINE_BREAK.join(map(",".join, zip(chunk.texts, *outputs, messages, strict=True)))
                spool.write((text + LINE_BREAK).encode("utf-8"))
        except FileFault as fault:
            raise InvalidInput(
                f"The file cannot be read from line {fault.line} on: {fault.message}",
                {f"line {fault.line}": {ROW_ERROR_KEY: [fault.message]}},
            ) from None
    except BaseException:
        spool.close()
        raise
    return spool, scorer.rows
