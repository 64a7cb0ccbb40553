"""Reading an uploaded file from the request: a raw text/csv body or one multipart part,
within the upload limit, without buffering it whole."""

from __future__ import annotations

import io
from typing import IO, Any

from flask import Request
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.sansio.multipart import Data, Epilogue, Field, File, MultipartDecoder, NeedData

from service.csv_files.reading import READ_SIZE
from service.errors import InvalidInput, MalformedRequest, UnsupportedMediaType, UploadTooLarge

CSV_MEDIA_TYPE = "text/csv"
FORM_MEDIA_TYPE = "multipart/form-data"
FILE_FIELD = "file"
MAX_PART_HEADER_BYTES = 64 * 1024  # multipart preamble and part headers
_CHARSETS = frozenset({"utf-8", "utf8", "us-ascii", "ascii"})


# --- The request body ---------------------------------------------------------------


class UploadBody(io.RawIOBase):
    """The request body, counting what was read; over the upload limit it raises ``UploadTooLarge``."""

    def __init__(self, req: Request, limit: int) -> None:
        super().__init__()
        req.max_content_length = limit
        self._limit = limit
        try:
            self._stream = req.stream
        except RequestEntityTooLarge:  # a Content-Length over the limit
            raise UploadTooLarge(limit) from None
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
                self._ended = True  # nothing more is read: the answer is a 413
                raise UploadTooLarge(self._limit) from None
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


def open_source(req: Request, body: UploadBody) -> IO[bytes]:
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

    def __init__(self, body: UploadBody, boundary: bytes) -> None:
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
