"""API keys: the file of their hashes, and telling a client by the key it sends.

The file (``SERVICE_API_KEYS_FILE``) holds one client per line::

    sha256:<64 hex digits> <client name> [<model>,<model>...]

The service never stores or sees a raw key at rest: ``keys create`` prints the
key once and appends only its SHA-256. A key is long and random (256 bits), so
one unsalted hash is enough: nothing can be guessed from it that is smaller
than the key itself. Lines starting with ``#`` and blank lines are ignored. A
client with models listed may call those models only.

The file is read again when it changes (checked at most once a second), so a
created or revoked key takes effect without a restart. A file that has become
unreadable or invalid keeps the keys last read, and the fault is logged.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# A client's name: it appears in logs and metric labels, so it stays short and plain.
CLIENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_HASH = re.compile(r"sha256:([0-9a-f]{64})")
KEY_PREFIX = "sks_"
RELOAD_SECONDS = 1.0


class KeyFileError(ValueError):
    """The keys file cannot be read, or a line of it is not a key line."""


@dataclass(frozen=True)
class Client:
    """Who sent a request, by the key it carried."""

    name: str
    models: frozenset[str] | None = None  # None: every model

    def may_use(self, model: str) -> bool:
        return self.models is None or model in self.models


@dataclass(frozen=True)
class _Entry:
    digest: bytes
    client: Client


def new_key() -> str:
    """A fresh key: 32 random bytes, URL-safe, with a prefix that tells what it is in a leak scan."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


def parse_line(line: str, number: int) -> _Entry | None:
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    parts = text.split()
    found = _HASH.fullmatch(parts[0]) if parts else None
    if found is None or len(parts) not in (2, 3) or not CLIENT_NAME.fullmatch(parts[1]):
        raise KeyFileError(f"line {number} is not 'sha256:<64 hex digits> NAME [MODEL,MODEL...]'")
    models = None
    if len(parts) == 3:
        names = [name for name in parts[2].split(",") if name]
        if not names or not all(_MODEL_NAME.fullmatch(name) for name in names):
            raise KeyFileError(f"line {number}: the models must be names separated by commas")
        models = frozenset(names)
    return _Entry(bytes.fromhex(found.group(1)), Client(parts[1], models))


def read_entries(path: Path) -> list[_Entry]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise KeyFileError(f"cannot read {path}: {error}") from None
    entries = [
        entry for number, line in enumerate(text.splitlines(), 1) if (entry := parse_line(line, number))
    ]
    names = [entry.client.name for entry in entries]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise KeyFileError(f"client names must be unique; repeated: {', '.join(repeated)}")
    return entries


class KeyRing:
    """The keys of one file, read again when the file changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._entries: list[_Entry] = []
        self._stamp: tuple[int, ...] | None = None
        self._checked = time.monotonic()
        # Missing or invalid, the file lets nobody in (and the service still starts, so
        # that 'keys create' can write it): it is read again once it changes.
        self._reload(_stamp(path))

    def client(self, key: str | None) -> Client | None:
        """The client whose key this is, or None. Every stored hash is compared, in constant time."""
        entries = self._current()
        if not key:
            return None
        sent = digest(key)
        found = None
        for entry in entries:
            if hmac.compare_digest(sent, entry.digest):
                found = entry.client
        return found

    def _current(self) -> list[_Entry]:
        now = time.monotonic()
        if now - self._checked < RELOAD_SECONDS:
            return self._entries
        with self._lock:
            if now - self._checked >= RELOAD_SECONDS:
                self._checked = now
                stamp = _stamp(self.path)
                if stamp != self._stamp:
                    self._reload(stamp)
        return self._entries

    def _reload(self, stamp: tuple[int, ...] | None) -> None:
        self._stamp = stamp
        if stamp is None:
            log.warning(
                "API keys file %s does not exist: no key is accepted until 'keys create' writes it", self.path
            )
            self._entries = []
            return
        try:
            self._entries = read_entries(self.path)
        except KeyFileError as error:
            log.error(
                "API keys file not read; the keys read before (%d) stay in force: %s",
                len(self._entries),
                error,
            )
            return
        log.info("API keys file read: %d clients", len(self._entries))


def _stamp(path: Path) -> tuple[int, ...] | None:
    try:
        found = os.stat(path)
    except OSError:
        return None
    return (found.st_ino, found.st_size, found.st_mtime_ns)


# --- Editing the file (flask --app wsgi keys ...) ------------------------------------


def add_client(path: Path, name: str, models: list[str] | None) -> str:
    """Append a new client's hashed key to ``path`` (made if missing); returns the raw key."""
    if not CLIENT_NAME.fullmatch(name):
        raise KeyFileError(
            "a client name is 1-64 letters, digits, '_', '.' or '-', starting with one of the first two"
        )
    entries = read_entries(path) if path.exists() else []
    if any(entry.client.name == name for entry in entries):
        raise KeyFileError(f"a client named {name!r} already has a key; revoke it first")
    if models is not None and not all(_MODEL_NAME.fullmatch(model) for model in models):
        raise KeyFileError("the models must be model names")
    key = new_key()
    line = f"sha256:{digest(key).hex()} {name}" + (f" {','.join(models)}" if models else "") + "\n"
    # Owner-only: the hashes are not secrets, but nobody else has business with the file.
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(descriptor, "a", encoding="utf-8") as file:
        file.write(line)
    return key


def remove_client(path: Path, name: str) -> bool:
    """Remove the client's line from ``path``; False if it had none. The file is replaced at once."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True) if path.exists() else []
    kept = [line for number, line in enumerate(lines, 1) if not _names(line, number, name)]
    if len(kept) == len(lines):
        return False
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.writelines(kept)
    os.replace(temporary, path)
    return True


def _names(line: str, number: int, name: str) -> bool:
    entry = parse_line(line, number)
    return entry is not None and entry.client.name == name


def clients(path: Path) -> list[Client]:
    return [entry.client for entry in read_entries(path)] if path.exists() else []
