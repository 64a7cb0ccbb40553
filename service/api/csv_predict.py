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

import codecs
import csv
import io
import itertools
import tempfile
import time
from dataclasses import dataclass
from typing import IO, Any

import numpy as np
from flask import Blueprint, Request, g, request
from flask.wrappers import Response
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.sansio.multipart import Data, Epilogue, Field, File, MultipartDecoder, NeedData
from werkzeug.wsgi import wrap_file

from service.api import state
from service.api.metrics import metrics
from service.api.openapi import documented
from service.api.problems import problem
from service.api.schemas import probability_keys
from service.errors import InvalidInput, MalformedRequest, PredictionFailed, UnsupportedMediaType
from service.models import LoadedModel
from service.models.frame_validation import CellValidator
from service.models.inputs import ROW_ERROR_KEY

bp = Blueprint("csv_predict", __name__)

CSV_MEDIA_TYPE = "text/csv"
FORM_MEDIA_TYPE = "multipart/form-data"
FILE_FIELD = "file"
CHUNK_ROWS = 10_000  # rows per validation and model call
CHUNK_BYTES = 8 * 1024 * 1024  # ... or fewer, if their text is this large; also the longest line
READ_SIZE = 64 * 1024
LINE_BREAK = "\r\n"  # in the answer, as RFC 4180 has it
SPOOL_MEMORY_BYTES = 4 * 1024 * 1024  # answers larger than this go to a temporary file
MAX_PART_HEADER_BYTES = 64 * 1024  # multipart preamble and part headers
MAX_LISTED_LINES = 50  # bad lines named in a 422
_CHARSETS = frozenset({"utf-8", "utf8", "us-ascii", "ascii"})
_DELIMITERS = {";": "semicolons", "\t": "tabs", "|": "vertical bars"}


class _UploadTooLarge(Exception):
    """The body went past ``max_upload_bytes``."""


class _FileFault(Exception):
    """The file cannot be read on from ``line`` (a line too long, broken quoting)."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


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
        body = _Body(request)
        source = _open_source(request, body)
        try:
            spool, rows = _score_file(model, source)
        except (InvalidInput, MalformedRequest, PredictionFailed):
            body.drain()  # so that a client still sending sees this answer, not a reset
            raise
        body.drain()
    except _UploadTooLarge:
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


# --- The request body ---------------------------------------------------------------


class _Body(io.RawIOBase):
    """The request body, counting what was read; over the upload limit it raises ``_UploadTooLarge``."""

    def __init__(self, req: Request) -> None:
        super().__init__()
        self._stream = req.stream  # raises RequestEntityTooLarge for a Content-Length over the limit
        self._input = req.environ["wsgi.input"]
        self._ended = False
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._ended:
            return 0
        try:
            count = self._stream.readinto(buffer) or 0
        except RequestEntityTooLarge:
            # Werkzeug stops a chunked body at the limit; one more byte from the
            # server tells a body of exactly the limit from a longer one.
            if self._input.read(1):
                raise _UploadTooLarge() from None
            count = 0
        if not count:
            self._ended = True
        self.bytes_read += count
        return count

    def drain(self) -> None:
        """Read what the client still sends (at most the upload limit), discarding it."""
        try:
            while self.read(READ_SIZE):
                pass
        except Exception:  # over the limit, or the client went away: nothing more to read
            self._ended = True


def _open_source(req: Request, body: _Body) -> IO[bytes]:
    """The CSV file's bytes: the body itself, or the ``file`` part of a form."""
    encoding = req.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise UnsupportedMediaType(
            f"Content-Encoding {encoding!r} is not supported; send the file uncompressed."
        )
    if req.mimetype == CSV_MEDIA_TYPE:
        charset = req.mimetype_params.get("charset", "utf-8").strip().lower()
        if charset not in _CHARSETS:
            raise UnsupportedMediaType(f"The file must be UTF-8; charset={charset} is not supported.")
        return body
    if req.mimetype == FORM_MEDIA_TYPE:
        boundary = req.mimetype_params.get("boundary", "")
        if not boundary:
            raise MalformedRequest("The multipart/form-data Content-Type has no boundary.")
        return _FormFile(body, boundary.encode("latin-1"))
    sent = req.mimetype or "no Content-Type"
    raise UnsupportedMediaType(
        f"Expected Content-Type: text/csv, or multipart/form-data with the file in a field "
        f"named {FILE_FIELD!r}; got {sent}."
    )


class _FormFile(io.RawIOBase):
    """The bytes of the ``file`` part of a multipart/form-data body, decoded as they arrive."""

    def __init__(self, body: _Body, boundary: bytes) -> None:
        super().__init__()
        self._body = body
        self._decoder = MultipartDecoder(boundary)
        self._in_file = False
        self._found = False
        self._done = False
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            if self._done:
                return 0
            self._advance()
        count = min(len(buffer), len(self._pending))
        buffer[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        return count

    def _advance(self) -> None:
        try:
            event = self._decoder.next_event()
        except ValueError as error:  # e.g. the body ends inside a part
            raise MalformedRequest(f"The multipart/form-data body cannot be read: {error}.") from None
        if isinstance(event, NeedData):
            if not self._in_file and len(self._decoder.buffer) > MAX_PART_HEADER_BYTES:
                raise MalformedRequest("The multipart/form-data body has no readable part headers.")
            data = self._body.read(READ_SIZE)
            self._decoder.receive_data(data or None)
        elif isinstance(event, (File, Field)):
            self._in_file = event.name == FILE_FIELD and not self._found
            self._found = self._found or self._in_file
        elif isinstance(event, Data):
            if self._in_file:
                self._pending = memoryview(event.data)
                if not event.more_data:
                    self._done = True  # the rest of the body is drained, unread
        elif isinstance(event, Epilogue):
            if not self._found:
                raise InvalidInput(
                    f"The form has no field named {FILE_FIELD!r}; send the CSV file in it.",
                    {FILE_FIELD: ["Missing data for required field."]},
                )
            self._done = True


# --- Reading the CSV -------------------------------------------------------------


@dataclass
class _Block:
    """Rows parsed from consecutive lines of the file."""

    rows: list[list[str]] | None  # cells per row (the csv module's parse); None: split on commas
    texts: list[str]  # each row's text as sent, without its line break
    starts: np.ndarray  # the line on which each row starts
    bad_lines: list[int]  # lines that are not UTF-8


class _CsvReader:
    """Parses the file's bytes into blocks of rows, one block of lines at a time.

    A block of lines without a quote is split with ``str`` methods alone, in C; a
    block with quotes goes through the ``csv`` module, row by row, and a quoted
    cell may then run on into the next block.
    """

    def __init__(self, source: IO[bytes]) -> None:
        self._source = source
        self._pending = b""  # bytes read after the last complete line
        self._eof = False
        self._next_line = 1  # the number of the first line not yet taken
        self._carry: list[str] = []  # lines of a row that goes on in the next block
        self._carry_bad: list[int] = []

    def block(self, max_lines: int) -> _Block | None:
        """The rows of the next ``max_lines`` lines or so (blank lines skipped); None at the end."""
        while True:
            got = self._next_lines(max_lines)
            if got is None:
                if self._carry:
                    line = self._next_line - len(self._carry)
                    raise _FileFault(line, f"Line {line} opens a quoted cell that is never closed.")
                return None
            text, first_line, bad_lines = got
            plain = text.replace("\r\n", "\n") if "\r" in text else text
            if not self._carry and '"' not in plain and "\r" not in plain:
                block = self._plain_block(plain, first_line, bad_lines)
            else:
                block = self._quoted_block(text, first_line, bad_lines)
            if block is not None:
                return block

    def _next_lines(self, max_lines: int) -> tuple[str, int, list[int]] | None:
        """(text, number of its first line, lines not UTF-8) of up to ``max_lines`` more lines."""
        pieces = [self._pending]
        count = self._pending.count(b"\n")
        size = len(self._pending)
        while count < max_lines and size < CHUNK_BYTES and not self._eof:
            more = self._source.read(READ_SIZE)
            if not more:
                self._eof = True
                break
            pieces.append(more)
            count += more.count(b"\n")
            size += len(more)
        data = b"".join(pieces)
        if count > max_lines:
            cut = len(data) - len(data.split(b"\n", max_lines)[-1])
        elif self._eof:
            cut = len(data)
        elif count:
            cut = data.rfind(b"\n") + 1
        else:
            line = self._next_line
            raise _FileFault(line, f"Line {line} is longer than {CHUNK_BYTES} bytes.")
        if not cut:
            return None
        raw, self._pending = data[:cut], data[cut:]
        first_line = self._next_line
        self._next_line += raw.count(b"\n") + (not raw.endswith(b"\n"))
        if first_line == 1 and raw.startswith(codecs.BOM_UTF8):  # as spreadsheet programs write
            raw = raw[len(codecs.BOM_UTF8) :]
        try:
            return raw.decode("utf-8"), first_line, []
        except UnicodeDecodeError:
            pass
        bad_lines = []
        for index, line in enumerate(raw.split(b"\n")):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                bad_lines.append(first_line + index)
        return raw.decode("utf-8", "replace"), first_line, bad_lines

    @staticmethod
    def _plain_block(text: str, first_line: int, bad_lines: list[int]) -> _Block | None:
        texts = text.split("\n")
        if texts[-1] == "":
            texts.pop()
        starts = np.arange(first_line, first_line + len(texts), dtype=np.int64)
        if "" in texts:  # blank lines are skipped
            kept = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts)) > 0
            texts = list(itertools.compress(texts, kept.tolist()))
            starts = starts[kept]
        return _Block(None, texts, starts, bad_lines) if texts else None

    def _quoted_block(self, text: str, first_line: int, bad_lines: list[int]) -> _Block | None:
        lines = [line + "\n" for line in text.split("\n")]
        lines[-1] = lines[-1][:-1]  # what follows the last line break: "" or the file's unended last line
        if not lines[-1]:
            lines.pop()
        if self._carry:
            first_line -= len(self._carry)
            lines = self._carry + lines
            bad_lines = self._carry_bad + bad_lines
            self._carry, self._carry_bad = [], []
        reader = csv.reader(lines, strict=True)
        rows: list[list[str]] = []
        spans: list[tuple[int, int]] = []  # each row's lines, as indexes into ``lines``
        done = 0  # lines of complete rows
        try:
            for row in reader:
                if row:
                    rows.append(row)
                    spans.append((done, reader.line_num))
                done = reader.line_num
        except csv.Error as error:
            line = first_line + reader.line_num - 1
            if str(error) != "unexpected end of data" or reader.line_num != len(lines):
                raise _FileFault(line, f"Line {line} cannot be read as CSV: {error}.") from None
            # The last row goes on in the lines still to come.
            self._carry = lines[done:]
            self._carry_bad = [bad for bad in bad_lines if bad >= first_line + done]
            if sum(map(len, self._carry)) > CHUNK_BYTES:
                start = first_line + done
                raise _FileFault(
                    start, f"The row from line {start} on is longer than {CHUNK_BYTES} bytes."
                ) from None
        if not rows:
            return None
        texts = []
        for start, end in spans:
            row_text = "".join(lines[start:end])
            texts.append(row_text[:-2] if row_text.endswith("\r\n") else row_text.removesuffix("\n"))
        starts = first_line + np.array([start for start, _ in spans], dtype=np.int64)
        return _Block(rows, texts, starts, [bad for bad in bad_lines if bad < first_line + done])


def _quote(cell: str) -> str:
    """A cell as CSV text: quoted if it holds a comma, a quote or a line break."""
    if any(char in cell for char in ',"\r\n'):
        return '"' + cell.replace('"', '""') + '"'
    return cell


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
        self._reader = _CsvReader(source)
        self._validator = CellValidator(model.manifest)
        self._classes = model.manifest.classes or ()
        self._labels = {
            label: _quote(text)
            for label, text in zip(self._classes, probability_keys(self._classes), strict=True)
        }
        self._labels_as_they_are = all(
            isinstance(label, str) and _quote(label) == label for label in self._classes
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
                    texts[index] = ",".join(map(_quote, rows[index]))
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
            texts = [self._labels.get(value) or _quote(str(value)) for value in values]
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
        return ",".join([header, *map(_quote, names), "error"])


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
                    messages[index] = _quote(_error_text(int(chunk.lines[index]), fields))
                text = LINE_BREAK.join(map(",".join, zip(chunk.texts, *outputs, messages, strict=True)))
                spool.write((text + LINE_BREAK).encode("utf-8"))
        except _FileFault as fault:
            raise InvalidInput(
                f"The file cannot be read from line {fault.line} on: {fault.message}",
                {f"line {fault.line}": {ROW_ERROR_KEY: [fault.message]}},
            ) from None
    except BaseException:
        spool.close()
        raise
    return spool, scorer.rows
