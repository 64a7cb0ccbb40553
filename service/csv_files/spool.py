"""Where a CSV answer waits until the whole upload has been read, when it is not streamed.

An all-or-nothing answer (``on_error=fail``) cannot be sent before the end of
the file, since a bad row on its last line refuses the whole file; a client that
reads nothing until it has sent everything asks for the answer after the upload
(``stream=false``). It is kept in memory up to a few MiB, then in an anonymous
temporary file (disk, not memory), and sent with its length.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Iterable
from typing import IO

SPOOL_MEMORY_BYTES = 4 * 1024 * 1024  # answers larger than this go to a temporary file


class Spool:
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

    def content(self) -> bytes | IO[bytes]:
        """The bytes, or the temporary file rewound, for the response to send (and close)."""
        if self._file is None:
            return self._memory.getvalue()
        self._file.seek(0)
        return self._file

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def spooled(pieces: Iterable[bytes]) -> Spool:
    """``pieces`` (a streamed answer) gathered into a spool."""
    spool = Spool()
    try:
        for piece in pieces:
            spool.write(piece)
    except BaseException:
        spool.close()
        raise
    return spool
