"""The two ways a CSV file is answered: streamed as it is scored (the default), or all or nothing.

**Streamed** (``on_error=row``). The header is read and the first chunk scored
before anything is sent, so a file of the wrong shape (a broken header, a first
chunk that cannot be read) is still refused with a status code; so is any fault
of a file read to its end with its first chunk (a small file is answered whole). From then on
each chunk's lines are sent as soon as they are scored, while the rest of the
upload is still arriving: a worker holds one chunk, whatever the file's length.
A bad row is answered in place, its reason in the ``error`` column; if the
model fails on a chunk after the first, that chunk's rows say so in ``error``
and the stream goes on. A fault that stops the reading once the answer has
begun (broken quoting, a line over the limit, too many ragged rows, an upload
over the limit, a body that cannot be read) can no longer change the status:
the answer ends with one more row, every cell empty but ``error``, which says
``Scoring stopped`` with the line and the reason.

**All or nothing** (``on_error=fail``). The answer waits in a spool until the
whole file is read, since one invalid row anywhere refuses the file (422). Once
a chunk holds an invalid row nothing more is predicted (chunks before it were);
the rest of the file is only judged, so that the refusal names the first
``MAX_LISTED_ERRORS`` bad fields by line and counts the others.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import IO

import numpy as np

from service.csv_files.scoring import LINE_BREAK, Scorer
from service.csv_files.spool import Spool
from service.errors import MAX_LISTED_ERRORS, InvalidInput, PredictionFailed, ServiceError, UnreadableFile
from service.models.core import PredictionRequest

log = logging.getLogger(__name__)

STOPPED = "Scoring stopped"  # how the error cell of an answer's cut-short last row begins, after its line


# --- Streamed ------------------------------------------------------------------------


def start_stream(
    scoring: PredictionRequest,
    source: IO[bytes],
    max_columns: int,
    on_stopped: Callable[[Exception], None],
) -> Iterator[bytes]:
    """Read the header and score the first chunk now (any fault raises before a byte is sent);
    then the answer's bytes, chunk by chunk, as the rest of the file is read.

    ``on_stopped`` is told of a fault that ended the answer early (for the metrics).
    """
    scorer = Scorer(scoring.model, source, max_columns)
    texts = [scorer.output_header(scorer.header()) + LINE_BREAK]
    first = _next_answer(scoring, scorer, first=True)
    if first is None:
        return iter([texts[0].encode("utf-8")])
    texts.append(first)
    if scorer.source_ended:
        # The whole upload is in hand (what is left is a chunk at most): answered, or refused, whole.
        while (text := _next_answer(scoring, scorer, first=True)) is not None:
            texts.append(text)
        return iter(["".join(texts).encode("utf-8")])
    return _rest(scoring, scorer, "".join(texts).encode("utf-8"), on_stopped)


def _rest(
    scoring: PredictionRequest,
    scorer: Scorer,
    start: bytes,
    on_stopped: Callable[[Exception], None],
) -> Iterator[bytes]:
    yield start
    while True:
        line = scorer.next_line
        try:
            text = _next_answer(scoring, scorer, first=False)
        except ServiceError as error:  # the client's: the rest of the file cannot be read
            on_stopped(error)
            log.warning("CSV answer stopped at line %d: %s", line, error.detail)
            yield scorer.stopped(*_stop_reason(error, line)).encode("utf-8")
            return
        except Exception as error:  # a fault of the service: logged with its traceback, never shown
            on_stopped(error)
            log.exception("CSV answer stopped at line %d by an unexpected error", line)
            reason = (
                f"{STOPPED}: the service failed; quote request id {scoring.request_id} when reporting it. "
                f"The rows from line {line} on are not in this answer."
            )
            yield scorer.stopped(line, reason).encode("utf-8")
            return
        if text is None:
            return
        yield text.encode("utf-8")


def _next_answer(scoring: PredictionRequest, scorer: Scorer, *, first: bool) -> str | None:
    """The next chunk's lines of the answer; None at the end of the file."""
    chunk = scorer.chunk()
    if chunk is None:
        return None
    try:
        scored = scoring.score(chunk.rows, partial=True)
    except PredictionFailed as error:
        if first:  # nothing sent yet: a 500 problem says it best
            raise
        log.error("%s (request id %s)", error.detail, scoring.request_id, exc_info=error)
        scored = scorer.model_failed(chunk, scoring.request_id)
    return scorer.answer(chunk, scored)


def _stop_reason(error: ServiceError, line: int) -> tuple[int, str]:
    """(the line to name, the error cell's text after it) for a fault that stops the answer."""
    after = f"The rows from line {line} on are not in this answer."
    if isinstance(error, UnreadableFile):
        return error.line, f"{STOPPED}: {error.message} {after}"
    return line, f"{STOPPED}: {error.detail} {after}"


# --- All or nothing ------------------------------------------------------------------


def score_all_or_nothing(scoring: PredictionRequest, source: IO[bytes], max_columns: int) -> Spool:
    """Score the whole file into a spool; raises ``InvalidInput`` if any row is invalid, and any
    fault of the file as a whole, before anything is sent."""
    scorer = Scorer(scoring.model, source, max_columns)
    spool = Spool()
    refusal = _Refusal()
    try:
        header = scorer.header()
        spool.write((scorer.output_header(header) + LINE_BREAK).encode("utf-8"))
        while (chunk := scorer.chunk()) is not None:
            if refusal.bad_rows:
                refusal.add(chunk.rows.lines, scoring.judge_refused(chunk.rows).errors, len(chunk.texts))
                continue
            try:
                scored = scoring.score(chunk.rows)
            except InvalidInput as refused:
                # The core's refusal lists at most MAX_LISTED_ERRORS fields; the file's may hold more.
                # Rows the rules pass can still be refused: values the model could not score.
                checked = chunk.rows.check(scoring.model.rules, strict=False)
                lines = {f"line {int(line)}": index for index, line in enumerate(chunk.rows.lines)}
                errors = checked.errors or {lines[key]: fields for key, fields in refused.errors.items()}
                refusal.add(chunk.rows.lines, errors, len(chunk.texts))
                continue
            refusal.rows += len(chunk.texts)
            spool.write(scorer.answer(chunk, scored).encode("utf-8"))
        if refusal.bad_rows:
            raise refusal.error()
    except BaseException:
        spool.close()
        raise
    return spool


class _Refusal:
    """The bad rows of a file, by line: the first MAX_LISTED_ERRORS fields kept, the others counted."""

    def __init__(self) -> None:
        self.listed: dict[str, dict[str, list[str]]] = {}
        self.listed_fields = 0
        self.omitted_fields = 0
        self.bad_rows = 0
        self.rows = 0

    def add(self, lines: np.ndarray, errors: dict[int, dict[str, list[str]]], rows: int) -> None:
        self.rows += rows
        self.bad_rows += len(errors)
        for index, fields in errors.items():
            room = MAX_LISTED_ERRORS - self.listed_fields
            if room > 0:
                kept = dict(list(fields.items())[:room])
                self.listed[f"line {int(lines[index])}"] = kept
                self.listed_fields += len(kept)
                self.omitted_fields += len(fields) - len(kept)
            else:
                self.omitted_fields += len(fields)

    def error(self) -> InvalidInput:
        detail = (
            f"{self.bad_rows} of the {self.rows} row{'s' if self.rows != 1 else ''} "
            f"{'are' if self.bad_rows != 1 else 'is'} invalid, so nothing was predicted; 'errors' names "
            "each bad field by line (the header is line 1)."
        )
        return InvalidInput(detail, self.listed, omitted=self.omitted_fields)
