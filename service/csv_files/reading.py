"""Splitting a CSV stream into blocks of rows, with the line each row starts on."""

from __future__ import annotations

import codecs
import csv
import itertools
from dataclasses import dataclass
from typing import IO

import numpy as np

from service.errors import UnreadableFile

READ_SIZE = 64 * 1024  # bytes read from the source at a time
# A chunk holds rows up to this much text, and no line may be longer: the text
# of a chunk, split into cells, is the largest thing a CSV request holds.
CHUNK_BYTES = 1024 * 1024

# --- Reading the CSV -------------------------------------------------------------


@dataclass
class _Block:
    """Rows parsed from consecutive lines of the file."""

    rows: list[list[str]] | None  # cells per row (the csv module's parse); None: split on commas
    texts: list[str]  # each row's text as sent, without its line break
    starts: np.ndarray  # the line on which each row starts
    bad_lines: list[int]  # lines that are not UTF-8


class CsvReader:
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

    @property
    def source_ended(self) -> bool:
        """True once the source has been read to its end (what is left to parse is in memory)."""
        return self._eof

    @property
    def next_line(self) -> int:
        """The line on which the first row not yet returned starts (or a blank line before it)."""
        return self._next_line - len(self._carry)

    def block(self, max_lines: int) -> _Block | None:
        """The rows of the next ``max_lines`` lines or so (blank lines skipped); None at the end."""
        while True:
            got = self._next_lines(max_lines)
            if got is None:
                if self._carry:
                    line = self._next_line - len(self._carry)
                    raise UnreadableFile(line, f"Line {line} opens a quoted cell that is never closed.")
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
            raise UnreadableFile(line, f"Line {line} is longer than {CHUNK_BYTES} bytes.")
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
                raise UnreadableFile(line, f"Line {line} cannot be read as CSV: {error}.") from None
            # The last row goes on in the lines still to come.
            self._carry = lines[done:]
            self._carry_bad = [bad for bad in bad_lines if bad >= first_line + done]
            if sum(map(len, self._carry)) > CHUNK_BYTES:
                start = first_line + done
                raise UnreadableFile(
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
