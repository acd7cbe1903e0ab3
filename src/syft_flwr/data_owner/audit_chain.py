"""The audit trail's integrity: each line chained to the one before and MACed.

Every line written by :class:`~syft_flwr.data_owner.audit.AuditLog` carries

* ``seq``: its number, 1, 2, 3 ... across rotated files (never reset);
* ``prev``: the SHA-256 of the previous line's bytes (64 zeros for the first);
* ``mac``: an HMAC of the rest of the line under ``StateKey(keys, "audit")``, a
  key derived from the data owner's identity key, always the line's last field.

A chain alone cannot tell a truncated file from a shorter one, so the chain's
head (last ``seq``, its hash, and the ``seq`` of the oldest line still kept) is
kept, MACed, in ``audit.head.json`` next to the trail and rewritten in place
after every line (see :mod:`syft_flwr.data_owner.audit_head`). :func:`~syft_flwr.data_owner.audit_verify.verify_trail` then detects an edited line (its MAC), a
removed or inserted line (``seq`` and ``prev``), removed lines at the end (the
head) and removed old files (``first``). Rotation keeps the chain: the first line
of a new file carries the hash of the previous file's last line.

Lines written before the chain existed (no ``seq``) are reported as
*unverifiable*, never as intact, and the head counts them when the chain begins
(so more cannot be put in front of it later). A data owner without keys gets a
chain without MACs, which detects accidents but not a forger (also reported);
once it has keys, every later line and the head carry a MAC, and one without
after a MACed line is reported as not written by the data owner.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from syft_flwr.crypto.state_mac import StateKey
from syft_flwr.data_owner.audit_head import (
    HEAD_FILE,
    ChainHead,
    read_head,
    write_head,
)
from syft_flwr.errors import EnvelopeError, StateIntegrityError
from syft_flwr.wire import strict_json

__all__ = [
    "HEAD_FILE",
    "ChainHead",
    "count_unchained",
    "dir_lock",
    "drop_torn_tail",
    "fsync_file",
    "last_chained",
    "last_is_keyed",
    "line_hash",
    "mac_ok",
    "read_head",
    "seal_line",
    "trail_files",
    "trail_lines",
    "write_head",
]

CURRENT = "audit.jsonl"
LOCK_FILE = "audit.lock"
ZERO_HASH = "0" * 64
#: A line longer than this is not one the trail wrote (it is reported, unread).
MAX_LINE = 64 * 1024
_ROTATED = re.compile(r"^audit\.([1-9][0-9]{0,5})\.jsonl$")
_MAC_TAIL = re.compile(rb', "mac": "([0-9a-f]{64})"\}$')
logger = logging.getLogger("syft_flwr.audit")


_THREAD_LOCK = threading.Lock()


@contextlib.contextmanager
def dir_lock(directory: Path, *, create: bool = True) -> Iterator[None]:
    """Serialize writers of one trail, across threads and processes.

    POSIX only (``fcntl``); elsewhere a process-local lock. ``create=False``
    (a reader) takes no file lock where no writer ever made one.
    """
    with _THREAD_LOCK:
        try:
            import fcntl
        except ImportError:  # Windows
            yield
            return
        try:
            fd = os.open(
                os.path.join(directory, LOCK_FILE),
                os.O_RDWR | (os.O_CREAT if create else 0),
                0o600,
            )
        except FileNotFoundError:
            if create:
                raise
            yield
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock


def fsync_file(path: Path) -> None:
    """Flush ``path`` to disk, if it exists."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def seal_line(
    entry: dict[str, Any], seq: int, prev: str, key: StateKey | None
) -> bytes:
    """One trail line (no newline): ``entry`` with ``seq``, ``prev`` and ``mac``."""
    body = json.dumps({**entry, "seq": seq, "prev": prev}, sort_keys=True)
    if key is None:
        return body.encode()
    # The MAC covers the exact bytes before it, so no re-encoding is needed to
    # check it (a JSON round trip need not give the same bytes back).
    return (body[:-1] + f', "mac": "{key.tag_hex("line", body)}"}}').encode()


def line_hash(line: bytes) -> str:
    """The hash the next line's ``prev`` carries."""
    return hashlib.sha256(line).hexdigest()


def parse_line(line: bytes) -> dict[str, Any] | None:
    """The entry of one trail line, or None if it is not a JSON object."""
    try:
        entry = strict_json.loads(line, max_bytes=MAX_LINE)
    except EnvelopeError:
        return None
    return entry if isinstance(entry, dict) else None


def mac_ok(line: bytes, key: StateKey) -> bool:
    m = _MAC_TAIL.search(line)
    if m is None:
        return False
    try:
        key.verify(
            m.group(1).decode(), "line", line[: m.start()] + b"}", what="audit line"
        )
    except StateIntegrityError:
        return False
    return True


def trail_files(directory: Path) -> list[Path]:
    """The kept trail files, oldest first (``audit.N.jsonl`` ..., ``audit.jsonl``)."""
    rotated = []
    with contextlib.suppress(FileNotFoundError):
        for p in directory.iterdir():
            m = _ROTATED.match(p.name)
            if m:
                rotated.append((int(m.group(1)), p))
    return [p for _, p in sorted(rotated, reverse=True)] + [directory / CURRENT]


def trail_lines(directory: Path) -> Iterator[tuple[Path, int, bytes, bool]]:
    """Every line of the kept files, oldest first: (file, line number, bytes, torn).

    ``torn`` marks a last line without its newline (a crash mid-write).
    """
    for path in trail_files(directory):
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            continue
        parts = data.split(b"\n")
        for n, line in enumerate(parts, 1):
            last = n == len(parts)
            if last and not line:
                break
            yield path, n, line, last


def drop_torn_tail(path: Path) -> None:
    """Cut a last line left without its newline by a crash mid-write.

    It never made it into the chain (the head is written after the line), so
    nothing verifiable is lost; appending after it would garble the next line.
    """
    try:
        with open(path, "rb+") as f:
            size = f.seek(0, os.SEEK_END)
            if size == 0:
                return
            f.seek(size - 1)
            if f.read(1) == b"\n":  # the common case: one byte read
                return
            f.seek(max(0, size - MAX_LINE))
            tail = f.read()
            if tail.endswith(b"\n"):
                return
            cut = size - len(tail) + tail.rfind(b"\n") + 1
            f.truncate(cut)
            logger.warning("removed a torn last line of the audit trail (%s)", path)
    except FileNotFoundError:
        return


def count_unchained(directory: Path) -> int:
    """How many readable lines of the kept files have no chain fields."""
    return sum(
        1
        for _p, _n, raw, _t in trail_lines(directory)
        if (entry := parse_line(raw)) is not None and "seq" not in entry
    )


def last_is_keyed(directory: Path) -> bool:
    """Whether the last chained line of the trail carries a MAC."""
    keyed = False
    for _p, _n, raw, _t in trail_lines(directory):
        entry = parse_line(raw)
        if entry is not None and "seq" in entry:
            keyed = "mac" in entry
    return keyed


def last_chained(
    directory: Path, *, oldest_only: bool = False
) -> tuple[tuple[int, str] | None, int | None]:
    """(seq and hash of the last chained line, seq of the first chained line).

    ``oldest_only`` stops after the oldest kept file's first chained line.
    """
    last: tuple[int, str] | None = None
    first: int | None = None
    for _path, _n, raw, _torn in trail_lines(directory):
        entry = parse_line(raw)
        if entry is None or not isinstance(entry.get("seq"), int):
            continue
        if first is None:
            first = entry["seq"]
            if oldest_only:
                break
        last = (entry["seq"], line_hash(raw))
    return last, first
