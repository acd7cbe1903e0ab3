"""The audit trail's head: ``audit.head.json``, its format, reading and writing.

The head holds the chain's last ``seq``, that line's hash, the ``seq`` of the
oldest line still kept and how many unchained lines preceded the chain, MACed
under the trail's key (see :mod:`syft_flwr.data_owner.audit_chain`).

It is rewritten in place after every line: one ``pwrite`` of a record of
constant length (``HEAD_SIZE``, JSON padded with spaces) on a descriptor kept
open, no temporary file and no rename. A head torn by a crash mid-write fails
its parse or MAC and is handled like a lost one (the writer records a
``head_lost`` line; ``--verify`` reports it). Writers and ``--verify`` read it
under ``audit.lock``, so no reader sees a write half done.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from syft_flwr._fs import fsync_dir
from syft_flwr.crypto.state_mac import StateKey
from syft_flwr.errors import EnvelopeError, StateIntegrityError
from syft_flwr.wire import strict_json

__all__ = [
    "HEAD_FILE",
    "HEAD_SIZE",
    "ChainHead",
    "HeadWriter",
    "head_bytes",
    "read_head",
    "write_head",
]

HEAD_FILE = "audit.head.json"
#: The head is always this long (padded with spaces), so rewriting it in place
#: never leaves old bytes behind; it is far shorter than this in practice.
HEAD_SIZE = 512
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class ChainHead:
    """The newest line of the chain, the oldest one still kept, and how many
    unchained lines (an older syft_flwr's) were there when the chain began."""

    seq: int
    hash: str
    first: int
    legacy: int = 0
    #: Whether the head carried a MAC (False: written before the data owner had
    #: keys; not itself part of the head).
    keyed: bool = field(default=True, compare=False)


def _head_fields(head: ChainHead) -> tuple[str, ...]:
    return (str(head.seq), head.hash, str(head.first), str(head.legacy))


def head_bytes(head: ChainHead, key: StateKey | None) -> bytes:
    """The head file's bytes: JSON padded with spaces to ``HEAD_SIZE``."""
    # Written out by hand (the keys sorted, as json.dumps would): four numbers
    # and hex digits, and this runs once per line.
    mac = (
        "" if key is None else f'"mac": "{key.tag_hex("head", *_head_fields(head))}", '
    )
    body = (
        f'{{"first": {int(head.first)}, "hash": {json.dumps(head.hash)}, '
        f'"legacy": {int(head.legacy)}, {mac}"seq": {int(head.seq)}}}'
    )
    size = max(HEAD_SIZE, -(-(len(body) + 1) // HEAD_SIZE) * HEAD_SIZE)
    return (body.ljust(size - 1) + "\n").encode()


class HeadWriter:
    """``audit.head.json`` of one writer, rewritten in place on a kept descriptor.

    One ``pwrite`` of a record of constant length per line, no temporary file
    and no rename: a head torn by a crash mid-write fails its parse or MAC and
    is handled like a lost one (a ``head_lost`` line). :meth:`unchanged` tells
    whether the file is still exactly what this writer last put there.
    """

    def __init__(self, directory: Path) -> None:
        self.path = directory / HEAD_FILE
        self.dir = directory
        self._fd: int | None = None
        self._new_entry = False  # the folder entry is not fsynced yet
        self._last: bytes | None = None
        self._sig: tuple[int, int, int] | None = None

    def _open(self) -> int:
        if self._fd is not None:
            try:
                if os.stat(self.path).st_ino == os.fstat(self._fd).st_ino:
                    return self._fd
            except FileNotFoundError:
                pass
            self.close()
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        self._new_entry = True
        return self._fd

    def write(
        self,
        head: ChainHead,
        key: StateKey | None,
        *,
        durable: bool,
        unchanged: bool = False,
    ) -> None:
        """Put ``head`` in place (fsynced, with the folder entry, when ``durable``).

        ``unchanged``: :meth:`unchanged` said so under the lock still held.
        """
        sig, self._last, self._sig = self._sig, None, None
        data = head_bytes(head, key)
        if unchanged and self._fd is not None and sig is not None:
            fd, size = self._fd, sig[1]
        else:
            fd = self._open()
            size = os.fstat(fd).st_size
        if size > len(data):  # not ours: another format or an edit
            os.ftruncate(fd, len(data))
        os.pwrite(fd, data, 0)
        if durable:
            self.sync()
        st = os.fstat(fd)
        self._last, self._sig = data, (st.st_ino, st.st_size, st.st_mtime_ns)

    def unchanged(self) -> bool:
        """Whether the head file is still the one, and the bytes, last written."""
        if self._fd is None or self._sig is None or self._last is None:
            return False
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        if (st.st_ino, st.st_size, st.st_mtime_ns) != self._sig:
            return False
        # The same size and time can hide a rewrite within one clock tick.
        return os.pread(self._fd, len(self._last) + 1, 0) == self._last

    def sync(self) -> None:
        if self._fd is None:
            return
        os.fsync(self._fd)
        if self._new_entry:
            fsync_dir(self.dir)
            self._new_entry = False

    def close(self) -> None:
        self._last = self._sig = None
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


def write_head(
    directory: Path, head: ChainHead, key: StateKey | None, *, durable: bool
) -> None:
    """Write ``audit.head.json`` once (fsynced when ``durable``)."""
    writer = HeadWriter(directory)
    try:
        writer.write(head, key, durable=durable)
    finally:
        writer.close()


def read_head(
    directory: Path, key: StateKey | None, *, unkeyed_ok: bool = False
) -> ChainHead | None:
    """The kept chain head; None if there is none.

    ``unkeyed_ok`` accepts a head without a MAC (``keyed=False``): one written
    before the data owner had keys; the caller decides whether that can be.

    Raises
    ------
    StateIntegrityError
        The head file is unreadable, or fails its MAC.
    """
    try:
        raw = (directory / HEAD_FILE).read_bytes()
    except FileNotFoundError:
        return None
    try:
        doc = strict_json.loads(raw[: 64 * 1024], max_bytes=64 * 1024)
        assert isinstance(doc, dict)
        head = ChainHead(
            int(doc["seq"]), str(doc["hash"]), int(doc["first"]), int(doc["legacy"])
        )
        assert _HEX64.match(head.hash) and 0 <= head.first <= head.seq + 1
        assert head.legacy >= 0
    except (AssertionError, EnvelopeError, KeyError, TypeError, ValueError):
        raise StateIntegrityError(
            f"the audit trail's head ({HEAD_FILE}) cannot be read"
        ) from None
    if key is not None and "mac" not in doc and unkeyed_ok:
        return ChainHead(head.seq, head.hash, head.first, head.legacy, keyed=False)
    if key is not None:
        key.verify(
            str(doc.get("mac", "")),
            "head",
            *_head_fields(head),
            what=f"the audit trail's head ({HEAD_FILE})",
        )
    return head
