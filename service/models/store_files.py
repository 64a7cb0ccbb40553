"""Reading a model store's files so that nothing in one model's directory can stop or hang start-up.

Every model is loaded at start-up: files are opened without blocking and read
only if they are regular files, and symbolic links are followed only while they
stay inside the store. A file that is not read raises ``Refused``, whose message
follows the file's name ("is missing").
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from service.models.manifest import NAME_PATTERN

# Links are followed only while they stay in the store: a manifest linked to a
# file elsewhere would have its keys quoted in /ready, an artifact elsewhere is
# outside what the operator manages as the store.
LEAVES_STORE = "leads outside the model store (symbolic links are followed only within it)"

_FILE_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


class Refused(Exception):
    """A stored file that is not read; the message follows the file's name ("is missing")."""


def inside(root: Path, path: Path) -> bool:
    """Whether ``path``, every link resolved, is in the store at ``root`` (itself resolved)."""
    return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(root))


def read_regular(root: Path, path: Path, limit: int | None = None) -> bytes:
    """The bytes of a regular file in the store: all of them, or at most ``limit`` + 1.

    Raises ``Refused``. A FIFO would block the open (and the start-up) until
    someone writes to it, and a device may never end: anything but a regular
    file is refused after a ``stat``, without being opened. The open itself
    does not block, and the opened file is checked again, in case it was
    swapped in between.
    """
    real = Path(os.path.realpath(path))
    if not inside(root, real):
        raise Refused(LEAVES_STORE)
    try:
        _check_regular(os.stat(real).st_mode)
        fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
        try:
            _check_regular(os.fstat(fd).st_mode)
            with open(fd, "rb", closefd=False) as handle:
                return handle.read() if limit is None else handle.read(limit + 1)
        finally:
            os.close(fd)
    except FileNotFoundError:
        raise Refused("is missing") from None
    except OSError as error:
        raise Refused(f"cannot be read: {error.strerror}") from None


def subdirectories(directory: Path) -> list[str]:
    """Entries of ``directory`` with a valid name that are directories, through links.

    An entry that cannot be examined (a link to itself, a target out of reach)
    counts: loading it says why it fails, rather than it silently not existing.
    Raises ``OSError`` if ``directory`` cannot be listed.
    """
    found = []
    with os.scandir(directory) as entries:
        for entry in entries:
            if not NAME_PATTERN.fullmatch(entry.name):
                continue
            try:
                is_directory = entry.is_dir()
            except OSError:
                is_directory = True
            if is_directory:
                found.append(entry.name)
    return found


def _check_regular(mode: int) -> None:
    if not stat.S_ISREG(mode):
        kind = _FILE_KINDS.get(stat.S_IFMT(mode), "of another kind")
        raise Refused(f"is not a regular file ({kind})")
