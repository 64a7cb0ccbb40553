"""Scoring a CSV file chunk by chunk: the header, each chunk's rows through the prediction core,
and the answer's text.

Memory per chunk is bounded whatever the file's shape. A chunk holds at most
``CHUNK_ROWS`` lines, at most ``reading.CHUNK_BYTES`` of text, and at most
``CHUNK_BYTES // header width`` lines, so a wide header with short rows cannot
make a chunk large. Only the feature cells of rows with the header's number of
cells are ever split out and checked; a row with another number of cells is
refused as a whole, and only the answer's copy of it is padded or cut to the
header's width.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass
from operator import itemgetter
from typing import IO, Any

import numpy as np

from service.csv_files.reading import CHUNK_BYTES, CsvReader
from service.csv_files.text import defuse_plain_lines, is_formula, safe_cell, safe_row
from service.errors import (
    MAX_LISTED_ERRORS,
    ROW_ERROR_KEY,
    InvalidInput,
    MalformedRequest,
    TooManyColumns,
    listing,
)
from service.models import LoadedModel
from service.models.core import Scored
from service.models.loaded import probability_keys
from service.models.rules import Checked
from service.models.text_cells import CellRows

LINE_BREAK = "\r\n"  # in the answer, as RFC 4180 has it
CHUNK_ROWS = 10_000  # rows per validation and model call, at most
# A row with another number of cells than the header is answered padded (or
# cut) to the header's width: with a wide header, each costs the answer up to
# that many bytes however short it was sent. A file with more such rows than
# this is taken as unreadable (a wrong delimiter, unquoted commas) and refused,
# so the answer can never be a large multiple of the upload.
MAX_RAGGED_ROWS = 1_000
_DELIMITERS = {";": "semicolons", "\t": "tabs", "|": "vertical bars"}


@dataclass
class Chunk:
    texts: list[str]  # each row's text for the answer: cells as sent (formulas defused), header's width
    rows: CellRows  # its feature cells, for the prediction core


class Scorer:
    """Reads a CSV file in chunks, and writes each chunk's answer from what the core made of it."""

    def __init__(self, model: LoadedModel, source: IO[bytes], max_columns: int) -> None:
        self.model = model
        self._reader = CsvReader(source)
        # Every label the model may answer with (of every target, for several).
        labels = model.manifest.classes or ()
        if model.manifest.targets is not None:
            labels = tuple(label for target in labels for label in target)
        self._classes = model.manifest.classes if model.has_probabilities else ()
        self._labels = {
            (type(label), label): safe_cell(text)
            for label, text in zip(labels, probability_keys(labels), strict=True)
        }
        self._labels_as_they_are = all(
            isinstance(label, str) and safe_cell(label) == label for label in labels
        )
        # A model with more features than the limit still takes a file of its features.
        self._max_columns = max(max_columns, len(model.manifest.features))
        self._width = 0
        self._columns: list[int] = []
        self._lines_per_chunk = CHUNK_ROWS
        self._ragged = 0  # rows so far whose number of cells is not the header's
        self._first_ragged_line = 0

    def header(self) -> str:
        """The header line for the answer, and where each feature is; 422 if a feature is missing."""
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
        if len(header) > self._max_columns:
            raise TooManyColumns(len(header), self._max_columns)
        names = [cell.strip() for cell in header]
        counts = Counter(names)
        features = self.model.manifest.feature_names
        missing = [feature for feature in features if not counts[feature]]
        if missing:
            detail = (
                f"The header (line {line}) lacks the column{'s' if len(missing) > 1 else ''} "
                f"{listing(missing)}; it must name every feature of the model: {listing(features)}."
            )
            problems = {feature: ["No column of this name in the header."] for feature in missing}
            raise InvalidInput(detail + _delimiter_hint(header), {f"line {line}": problems})
        repeated = {
            feature: [f"The header names this column {counts[feature]} times."]
            for feature in features
            if counts[feature] > 1
        }
        if repeated:
            raise InvalidInput(
                f"The header (line {line}) names a feature column more than once: {listing(list(repeated))}.",
                {f"line {line}": repeated},
            )
        self._width = len(header)
        first = {name: index for index, name in reversed(list(enumerate(names)))}
        self._columns = [first[feature] for feature in features]
        self._lines_per_chunk = max(1, min(CHUNK_ROWS, CHUNK_BYTES // self._width))
        return safe_row(header) if any(map(is_formula, header)) else block.texts[0]

    def chunk(self) -> Chunk | None:
        """The rows of the next lines; None at the end of the file."""
        block = self._reader.block(self._lines_per_chunk)
        if block is None:
            return None
        width, texts = self._width, block.texts
        row_errors: dict[int, str] = {}
        for bad in block.bad_lines:
            index = int(np.searchsorted(block.starts, bad, side="right")) - 1
            if index >= 0:
                row_errors[index] = f"Line {bad} is not valid UTF-8; send the file as UTF-8."
        if block.rows is None:  # unquoted: cells are what lies between commas
            counts = np.fromiter(map(str.count, texts, itertools.repeat(",")), np.int64, len(texts)) + 1
            ragged = np.flatnonzero(counts != width).tolist()
            self._count_ragged(ragged, block.starts, width)
            for index in ragged:
                row_errors.setdefault(index, _cell_count_error(int(counts[index]), width))
            checked = _without(len(texts), row_errors)
            cells = np.empty((len(checked), len(self._columns)), dtype=object)
            if len(checked):
                flat = ",".join(_rows_at(texts, checked)).split(",")
                for position, column in enumerate(self._columns):
                    cells[:, position] = flat[column::width]
                del flat
            texts = defuse_plain_lines(texts)
            for index in np.flatnonzero(counts != width).tolist():
                texts[index] = _fitted_text(texts[index], int(counts[index]), width)
        else:
            rows = block.rows
            ragged = [index for index, row in enumerate(rows) if len(row) != width]
            self._count_ragged(ragged, block.starts, width)
            for index in ragged:
                row_errors.setdefault(index, _cell_count_error(len(rows[index]), width))
            checked = _without(len(rows), row_errors)
            pick = itemgetter(*self._columns)
            cells = np.empty((len(checked), len(self._columns)), dtype=object)
            if len(checked):
                picked = [pick(rows[index]) for index in checked.tolist()]
                cells[:] = [[value] for value in picked] if len(self._columns) == 1 else picked
            for index, row in enumerate(rows):
                if len(row) != width:
                    cut = row[:width]
                    texts[index] = safe_row(cut) + "," * (width - len(cut))
                elif any(map(is_formula, row)):
                    texts[index] = safe_row(row)
        return Chunk(texts, CellRows(cells, block.starts, checked, row_errors))

    @property
    def source_ended(self) -> bool:
        """True once the whole upload has been read: the rest of the file is at most a chunk or so."""
        return self._reader.source_ended

    @property
    def next_line(self) -> int:
        """The line of the first row not yet read: where the answer stops if reading fails now."""
        return self._reader.next_line

    def model_failed(self, chunk: Chunk, request_id: str) -> Scored:
        """The chunk's outcome when the model failed on its valid rows: those rows get an error saying so,
        the invalid ones keep their own (judged again: the core did not return them)."""
        checked = chunk.rows.check(self.model.rules, strict=False)
        lines = chunk.rows.lines
        failed = [
            f"The model failed to predict the rows of lines {int(lines[0])} to {int(lines[-1])}, this one "
            f"among them; quote request id {request_id} when reporting it."
        ]
        errors = {index: checked.errors.get(index, {ROW_ERROR_KEY: failed}) for index in range(len(lines))}
        return Scored(Checked(np.zeros(len(lines), dtype=bool), None, errors), None)

    def stopped(self, line: int, message: str) -> str:
        """The answer's last row when scoring stops early: empty cells, and ``message`` in ``error``."""
        rows = CellRows(
            np.empty((0, len(self._columns)), dtype=object),
            np.array([line], dtype=np.int64),
            np.empty(0, dtype=np.intp),
            {0: message},
        )
        checked = Checked(np.zeros(1, dtype=bool), None, {0: {ROW_ERROR_KEY: [message]}})
        return self.answer(Chunk(["," * (self._width - 1)], rows), Scored(checked, None))

    def _count_ragged(self, ragged: list[int], lines: np.ndarray, width: int) -> None:
        """Count rows whose number of cells is not the header's; past MAX_RAGGED_ROWS, refuse the file."""
        if ragged and not self._ragged:
            self._first_ragged_line = int(lines[ragged[0]])
        self._ragged += len(ragged)
        if self._ragged > MAX_RAGGED_ROWS:
            first = self._first_ragged_line
            raise InvalidInput(
                f"More than {MAX_RAGGED_ROWS} rows have another number of cells than the header's "
                f"{width}, the first on line {first}: the file cannot be read as this CSV. "
                "Check its delimiter, and that cells holding commas are quoted.",
                {f"line {first}": {ROW_ERROR_KEY: [f"The header has {width} cells; this row does not."]}},
            )

    def answer(self, chunk: Chunk, scored: Scored) -> str:
        """The chunk's lines of the answer: each row as sent, its outputs (empty if invalid), its error,
        its warnings."""
        outputs = self._outputs(scored)
        messages = [""] * len(chunk.texts)
        for index, fields in scored.errors.items():
            messages[index] = error_text(int(chunk.rows.lines[index]), fields)
        warnings = [""] * len(chunk.texts)
        for index, fields in scored.warnings.items():
            warnings[index] = safe_cell(fields_text(fields))
        lines = zip(chunk.texts, *outputs, messages, warnings, strict=True)
        return LINE_BREAK.join(map(",".join, lines)) + LINE_BREAK

    def _outputs(self, scored: Scored) -> list[list[str]]:
        """The output columns as text: the prediction(s), each class's probability, the score."""
        prediction = scored.prediction
        rows = len(scored.valid)
        if prediction is None:
            return [[""] * rows for _ in self.output_names()]
        good = np.flatnonzero(scored.valid)
        outputs = [
            _spread(self._value_texts(column.tolist()), good, rows) for column in _columns(prediction.values)
        ]
        for numbers in (prediction.probabilities, prediction.scores):
            for column in _columns(numbers) if numbers is not None else ():
                # repr: the shortest text that reads back as the same float.
                outputs.append(_spread(list(map(repr, column.tolist())), good, rows))
        return outputs

    def _value_texts(self, values: list[Any]) -> list[str]:
        if self.model.manifest.task == "regression":
            return list(map(repr, values))
        if self.model.manifest.task != "classification":
            return list(map(str, values))  # 1 or -1, a cluster index
        if self._labels_as_they_are:
            return values
        return [self._labels.get((type(value), value)) or safe_cell(str(value)) for value in values]

    def output_names(self) -> list[str]:
        """The columns added after the file's own: prediction(s), probabilities, score."""
        manifest = self.model.manifest
        names = [f"prediction_{target}" for target in manifest.targets or ()] or ["prediction"]
        if self.model.has_probabilities:
            names += [f"probability_{label}" for label in probability_keys(self._classes)]
        if self.model.has_scores:
            names.append("score")
        return names

    def output_header(self, header: str) -> str:
        return ",".join([header, *map(safe_cell, self.output_names()), "error", "warnings"])


def _columns(values: np.ndarray) -> list[np.ndarray]:
    """The columns of a rows x columns array; a one-dimensional array is one column."""
    return list(values.T) if values.ndim == 2 else [values]


def _rows_at(items: list[str], indexes: np.ndarray) -> list[str]:
    """``items`` at ``indexes`` (all of them when every index is there)."""
    if len(indexes) == len(items):
        return items
    return [items[index] for index in indexes.tolist()]


def _without(rows: int, excluded: dict[int, str]) -> np.ndarray:
    """The indexes of ``rows`` rows, but those in ``excluded``."""
    keep = np.ones(rows, dtype=bool)
    keep[list(excluded)] = False
    return np.flatnonzero(keep)


def _fitted_text(text: str, cells: int, width: int) -> str:
    """An unquoted row's text with ``width`` cells: short rows padded with empty cells, long ones cut."""
    if cells < width:
        return text + "," * (width - cells)
    return ",".join(text.split(",", width)[:width])


def _cell_count_error(cells: int, width: int) -> str:
    return f"The row has {cells} cell{'s' if cells != 1 else ''}; the header has {width}."


def _spread(values: list[str], at: np.ndarray, rows: int) -> list[str]:
    """A column of ``rows`` cells: ``values`` at the rows ``at``, empty elsewhere."""
    if len(at) == rows:
        return values
    column = np.full(rows, "", dtype=object)
    column[at] = values
    return column.tolist()


def error_text(line: int, fields: dict[str, list[str]]) -> str:
    """A row's faults for its ``error`` cell: at most ``MAX_LISTED_ERRORS`` fields, then how many more."""
    return safe_cell(f"line {line}: " + fields_text(fields))


def fields_text(fields: dict[str, list[str]]) -> str:
    """Messages by field as one line: at most ``MAX_LISTED_ERRORS`` fields, then how many more."""
    parts = [
        " ".join(messages) if field == ROW_ERROR_KEY else f"{field}: {' '.join(messages)}"
        for field, messages in itertools.islice(fields.items(), MAX_LISTED_ERRORS)
    ]
    if len(fields) > MAX_LISTED_ERRORS:
        parts.append(f"and {len(fields) - MAX_LISTED_ERRORS} more fields")
    return "; ".join(parts)


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
