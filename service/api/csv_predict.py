"""Scoring a CSV file: ``POST /v1/models/<name>/predict/csv``.

The view reads the upload (``csv_upload``) and hands it to the CSV scorer
(``service.csv_files``), which sends it through the prediction core chunk by
chunk. By default the answer is streamed as it is scored, while the upload is
still being read (``service.csv_files.answering``): a worker holds one chunk,
whatever the file's length, and the request (its metrics, its prediction
request, the upload's last bytes) ends with the stream (``streaming``). With
``on_error=fail`` the answer waits in a spool for the end of the file, since
one bad row anywhere refuses it; with ``stream=false`` it waits there too, for
clients that read nothing before they have sent everything.
"""

from __future__ import annotations

from flask import Blueprint, g, request
from flask.wrappers import Response
from werkzeug.wsgi import wrap_file

from service.api.auth import client_name
from service.api.csv_upload import CSV_MEDIA_TYPE, UploadBody, open_source
from service.api.openapi import RUNTIME_HEADER, documented
from service.api.predict import note_model
from service.api.problems import INTERNAL_ERROR, problem_type
from service.api.query import CsvQuery, parsed_query
from service.api.streaming import streamed
from service.csv_files.answering import score_all_or_nothing, start_stream
from service.csv_files.reading import READ_SIZE
from service.csv_files.spool import spooled
from service.errors import (
    InvalidInput,
    MalformedRequest,
    ModelNotFound,
    ModelNotReady,
    PredictionFailed,
    TooManyColumns,
    UnreadableBody,
    UnsupportedMediaType,
    UploadTooLarge,
)
from service.state import state

bp = Blueprint("csv_predict", __name__)


@bp.post("/v1/models/<name>/predict/csv")
@documented(
    "Predict a CSV file",
    media_type=CSV_MEDIA_TYPE,
    errors=(
        MalformedRequest,
        UnreadableBody,
        ModelNotFound,
        UploadTooLarge,
        TooManyColumns,
        UnsupportedMediaType,
        InvalidInput,
        PredictionFailed,
        ModelNotReady,
    ),
    parameters={"name": {"examples": ["iris"]}},
    query=CsvQuery,
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
    """Scores a whole CSV file and answers with the file plus its predictions, streamed as it is scored.

    **Request body**: the file as `text/csv` (UTF-8, a byte-order mark allowed), or as
    `multipart/form-data` with the file in a field named `file`. Comma-separated, quoted
    as in RFC 4180. The first line is a header naming the columns: in any order, every
    feature of the model among them (names compared without surrounding spaces); other
    columns are passed through. Cells follow the manifest (`GET /v1/models/{name}`):
    numbers as decimal text, integers without a fraction (`3` or `3.0`), booleans as
    `true`/`false` (any case) or `1`/`0`, categories exactly as listed; an empty cell is
    a missing value, NaN and infinities are refused. Blank lines are skipped. Up to
    `SERVICE_MAX_UPLOAD_BYTES` (default 512 MiB); the number of rows is not limited.

    **Answer**: `text/csv`, a download named `NAME-predictions.csv`: every input column as
    sent, then `prediction`, then `probability_LABEL` per class for classifiers with
    probabilities, then `error`, empty on good rows. The file is scored in chunks (one
    model call each; at most 10,000 lines and 1 MiB of text, fewer lines for a wide
    header). A header-only file gets the header line alone. A text cell or class label
    that a spreadsheet would run as a formula (starting with `=`, `+`, `-`, `@`, a tab or
    a carriage return, and not a number) is written with a leading `'`.

    **`on_error=row` (the default): streamed.** The header is read and the first chunk
    scored before the answer starts; then each chunk is sent as soon as it is scored,
    while the rest of the upload still arrives (no `Content-Length`; chunked in
    HTTP/1.1), so the client must read the answer while it sends the file (curl does).
    A bad row keeps its place with empty outputs and `line N: field: message` in
    `error` (at most 100 fields, then how many more). If the model fails on a later
    chunk, its rows say so in `error`, with the request id. A fault that makes the rest
    of the file unreadable once the answer has begun (broken quoting, a line over
    1 MiB, more than 1,000 rows with another number of cells than the header, an upload
    over the limit, a body that cannot be read) ends the answer with one more row,
    every cell empty but `error`: `line N: Scoring stopped: why. The rows from line M on
    are not in this answer.` With `stream=false` the same answer is sent once the whole
    file is read, with its `Content-Length`: for a client that sends the whole request
    before it reads (a browser's `fetch`, Python's `requests`).

    **`on_error=fail`: all or nothing.** If any row anywhere is invalid, nothing is
    predicted: 422, with `errors` naming each bad field by line (`"line 3": {...}`; the
    header is line 1; at most 100 fields, then `errors_omitted` counts the rest). The
    answer is sent, with its `Content-Length`, once the whole file is read.

    **Errors** (before any output, in both modes): a file that cannot be read (empty,
    missing or repeated feature columns, another delimiter; broken quoting or a line
    over 1 MiB in the first chunk, or anywhere in a file read whole with it) is a 422,
    a header that is not UTF-8 a 400, a header over `SERVICE_MAX_CSV_COLUMNS` columns
    (default 1,000) or an upload over the limit a 413, an unknown `on_error` or query
    parameter a 422 naming it."""
    query = parsed_query(request, csv=True)
    current = state()
    model = current.registry.get(name)  # one snapshot for the whole request
    note_model(model)
    body = UploadBody(request, current.settings.max_upload_bytes)
    headers = {
        "Content-Disposition": f'attachment; filename="{model.name}-predictions.csv"',
        RUNTIME_HEADER: model.runtime,
    }
    if query["on_error"] == "fail" or not query["stream"]:
        try:
            with current.core.request(model, g.request_id, client_name()) as scoring:
                source = open_source(request, body)
                if query["on_error"] == "fail":
                    spool = score_all_or_nothing(scoring, source, current.settings.max_csv_columns)
                else:
                    spool = spooled(
                        start_stream(scoring, source, current.settings.max_csv_columns, _count_stop)
                    )
        finally:
            body.drain()  # so that a client still sending sees this answer, not a reset
        content = spool.content()
        return Response(
            content
            if isinstance(content, bytes)
            else wrap_file(request.environ, content, buffer_size=READ_SIZE),
            mimetype=CSV_MEDIA_TYPE,
            headers={**headers, "Content-Length": str(spool.size)},
            direct_passthrough=True,
        )
    scoring = current.core.request(model, g.request_id, client_name())
    try:
        chunks = start_stream(
            scoring, open_source(request, body), current.settings.max_csv_columns, on_stopped=_count_stop
        )
    except BaseException:
        body.drain()
        scoring.close()
        raise

    def end() -> None:
        body.drain()  # a client still sending (the answer stopped early) gets the whole answer, not a reset
        scoring.close()

    # No Content-Length: the server sends it chunked (HTTP/1.1), as it is made.
    return Response(streamed(chunks, end), mimetype=CSV_MEDIA_TYPE, headers=headers, direct_passthrough=True)


def _count_stop(error: Exception) -> None:
    """An answer cut short counts as an error answer of the fault's problem type (metrics, log)."""
    g.problem_type = (problem_type(type(error)) or INTERNAL_ERROR).slug
