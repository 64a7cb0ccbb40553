"""Where an all-or-nothing CSV answer (``on_error=fail``) waits until the whole upload has been read.

That answer cannot be sent before the end of the file, since a bad row on its
last line refuses the whole file. It is kept in memory up to a few MiB, then in
an anonymous temporary file (disk, not memory), and sent with its length.
"""

from __future__ import annotations

import io
import tempfile
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
