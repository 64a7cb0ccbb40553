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
import tempfile
from typing import IO, Any

from flask import Blueprint, g, request
from flask.wrappers import Response
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.wsgi import wrap_file

from service.api.csv_scoring import Scorer, error_text, first_chunk_problem
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
from service.errors import InvalidInput, ServiceError
from service.models import LoadedModel
from service.models.inputs import ROW_ERROR_KEY
from service.state import state

bp = Blueprint("csv_predict", __name__)

LINE_BREAK = "\r\n"  # in the answer, as RFC 4180 has it
SPOOL_MEMORY_BYTES = 4 * 1024 * 1024  # answers larger than this go to a temporary file


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
    file is read and scored in chunks (one model call each; a chunk is at most 10,000
    lines and 1 MiB of text, fewer lines for a wide header): every input column as sent,
    then `prediction`, then `probability_LABEL` per class for classifiers with
    probabilities, then `error`, empty on good rows. A header-only file gets the header
    line alone. A text cell or class label that a spreadsheet would run as a formula
    (starting with `=`, `+`, `-`, `@`, a tab or a carriage return, and not a number) is
    written with a leading `'`.

    **Errors**: if a row in the first chunk is invalid, nothing is predicted: 422, with
    `errors` naming each bad field by line (`"line 3": {...}`; the header is line 1; at
    most 100 fields, then `errors_omitted` counts the rest). A bad row further on keeps
    its place in the answer with an empty prediction and `line N: field: message` in
    `error`. A file that cannot be read (empty, missing or repeated feature columns,
    another delimiter, broken quoting, a line over 1 MiB) is a 422 wherever the fault
    is, a header that is not UTF-8 a 400, a header over `SERVICE_MAX_CSV_COLUMNS`
    columns (default 1,000) or an upload over the limit a 413: never a truncated
    answer."""
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
            spool, rows = _score_file(model, source, current.settings.max_csv_columns)
        except ServiceError:
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


def _score_file(model: LoadedModel, source: IO[bytes], max_columns: int) -> tuple[_Spool, int]:
    """Score the whole file into a spool; (spool, data rows). Problems raise before anything is sent."""
    scorer = Scorer(model, source, max_columns)
    spool = _Spool()
    try:
        try:
            header = scorer.header()
            spool.write((scorer.output_header(header) + LINE_BREAK).encode("utf-8"))
            first = True
            while (chunk := scorer.chunk()) is not None:
                checked = scorer.check(chunk)
                if first and checked.errors:
                    metrics().predictions.labels(model.name, model.version, "invalid").inc(len(chunk.texts))
                    raise first_chunk_problem(chunk, checked.errors)
                first = False
                outputs = scorer.predict(checked)
                messages = [""] * len(chunk.texts)
                for index, fields in checked.errors.items():
                    messages[index] = error_text(int(chunk.lines[index]), fields)
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
