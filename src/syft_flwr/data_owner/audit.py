"""The data owner's audit trail: what ran on my data, for whom, when, and what left.

An append-only JSON-lines file in the data owner's private state (never synced),
one line per event (fsynced at most once a second):

=========== ==========================================================
``received`` a request was read (id, app, sender, bytes)
``refused``  a request was not run (status and the reason in words)
``run``      the ClientApp ran (message type, round group, run id,
             start and end time, ``ok`` or the error type)
``replied``  the reply was written (status, bytes)
=========== ==========================================================

No private values are ever written: sizes, names, types and times only. The
file is rotated at ``max_bytes`` (``audit.jsonl`` -> ``audit.1.jsonl`` ...,
``keep`` old files), so the trail is bounded; it survives restarts.

Each line is chained to the one before and MACed with a key derived from the
data owner's identity key; the chain's head is kept in ``audit.head.json`` (see
:mod:`syft_flwr.data_owner.audit_chain`), so ``syft_flwr audit --verify`` detects an
edited, removed or inserted line and a cut-off end.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from syft_flwr.crypto.state_mac import StateKey
from syft_flwr.data_owner.audit_chain import (
    ZERO_HASH,
    count_unchained,
    dir_lock,
    drop_torn_tail,
    last_chained,
    last_is_keyed,
    line_hash,
    parse_line,
    seal_line,
    trail_lines,
)
from syft_flwr.data_owner.audit_format import format_audit
from syft_flwr.data_owner.audit_head import ChainHead, HeadWriter, read_head
from syft_flwr.data_owner.audit_verify import AuditReport, verify_trail
from syft_flwr.errors import KeyNotFound, StateIntegrityError

__all__ = [
    "AuditLog",
    "audit_entries",
    "audit_key",
    "format_audit",
    "read_audit",
    "verify_audit",
]

logger = logging.getLogger("syft_flwr.audit")

DEFAULT_MAX_BYTES = 5 * 1024 * 1024
#: Seconds between fsyncs of the trail: every line is in the kernel at once
#: (it survives a crash of the process); a crash of the machine loses at most
#: this much of the trail, and a busy data owner does not pay an fsync per line.
SYNC_EVERY = 1.0
DEFAULT_KEEP = 4
FILE = "audit.jsonl"


class AuditLog:
    """Append audit events durably; ``directory=None`` keeps them in memory.

    Parameters
    ----------
    directory:
        The data owner's private audit folder (``client.state_dir("audit")``).
    max_bytes:
        Size at which the current file is rotated.
    keep:
        How many rotated files are kept.
    clock:
        POSIX time source.
    key:
        ``StateKey(keys, "audit")`` of the data owner; every line is MACed with
        it (None: chained only, which ``--verify`` reports).
    """

    def __init__(
        self,
        directory: Path | None,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        keep: int = DEFAULT_KEEP,
        clock: Callable[[], float] = time.time,
        key: StateKey | None = None,
    ) -> None:
        self.dir = None if directory is None else Path(directory)
        self.max_bytes = max_bytes
        self.keep = keep
        self.clock = clock
        self.key = key
        self._lock = threading.Lock()
        self._memory: list[dict[str, Any]] = []
        self._last_sync = float("-inf")
        self._fd: int | None = None
        # This writer's last head, and the current file's (inode, size) just
        # after its last line: valid while no other writer touched the trail.
        self._head: ChainHead | None = None
        self._trail_sig: tuple[int, int] | None = None
        self._heads: HeadWriter | None = None
        self._trail = "" if directory is None else os.path.join(directory, FILE)
        if self.dir is not None:
            self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._heads = HeadWriter(self.dir)

    @classmethod
    def for_client(cls, client: Any, **kwargs: Any) -> AuditLog:
        """The audit trail of ``client``'s identity (all apps)."""
        state = client.state_dir("audit")
        kwargs.setdefault("key", audit_key(client))
        return cls(None if state is None else Path(state), **kwargs)

    def close(self) -> None:
        """Sync and close the trail's file (reopened at the next event)."""
        with self._lock:
            if self._fd is None:
                return
            assert self.dir is not None and self._heads is not None
            try:
                with dir_lock(self.dir):
                    os.fsync(self._fd)
                    self._heads.sync()
            except OSError:
                logger.exception("could not sync the audit trail")
            self._heads.close()
            os.close(self._fd)
            self._fd = None
            self._head = None

    def __del__(self) -> None:
        heads = getattr(self, "_heads", None)
        if heads is not None:
            try:
                heads.close()
            except OSError:
                pass
        if getattr(self, "_fd", None) is not None:
            try:
                os.close(self._fd)  # type: ignore[arg-type]
            except OSError:
                pass

    @property
    def path(self) -> Path | None:
        return None if self.dir is None else self.dir / FILE

    def record(self, event: str, **fields: Any) -> None:
        """Append one event. Never raises.

        Every line is in the kernel before this returns (it survives a crash
        of the process); the file is fsynced at most every ``SYNC_EVERY`` s.
        """
        entry = {"ts": round(self.clock(), 3), "event": event, **fields}
        with self._lock:
            if self.dir is None:
                self._memory.append(entry)
                return
            try:
                with dir_lock(self.dir):
                    self._append(entry)
            except OSError:  # the audit must never stop the serving loop
                logger.exception("could not write the audit trail")

    def _append(self, entry: dict[str, Any]) -> None:
        """Chain one line to the kept head (under the folder's lock).

        Several processes (one per served app) write one trail, and each goes
        on from the others: the head is remembered only while the trail and its
        head are exactly as this writer left them, else read back and checked.
        """
        assert self.dir is not None and self._heads is not None
        known, self._head = self._head, None  # forgotten until this line is in
        untouched = known is not None and self._untouched()
        if known is not None and untouched:
            head, fd = known, self._fd
            assert fd is not None and self._trail_sig is not None
            size = self._trail_sig[1]
        else:
            head = self._resume()
            fd = self._current_fd()
            size = os.fstat(fd).st_size
        if size >= self.max_bytes:
            head = self._rotate(head)
            fd = self._current_fd()
        line = seal_line(entry, head.seq + 1, head.hash, self.key)
        os.write(fd, line + b"\n")
        head = ChainHead(head.seq + 1, line_hash(line), head.first or 1, head.legacy)
        now = time.monotonic()
        durable = now - self._last_sync >= SYNC_EVERY
        if durable:
            # The trail first, then its head: a durable head never names lines
            # the disk does not have (short of a machine crash between two
            # syncs, which --verify reports as lines lost at the end).
            os.fsync(fd)
            self._last_sync = now
        self._heads.write(head, self.key, durable=durable, unchanged=untouched)
        st = os.fstat(fd)
        self._trail_sig, self._head = (st.st_ino, st.st_size), head

    def _untouched(self) -> bool:
        """Whether the trail and its head are as this writer last left them.

        Another writer's line grows the current file (or rotates it: a new
        inode) and rewrites the head; either is seen here without a parse.
        """
        assert self.dir is not None and self._heads is not None
        if self._fd is None:
            return False
        try:
            st = os.stat(self._trail)
        except FileNotFoundError:
            return False
        return (st.st_ino, st.st_size) == self._trail_sig and self._heads.unchanged()

    def _current_fd(self) -> int:
        """The open current file; reopened if another writer rotated it."""
        assert self.dir is not None
        path = self.dir / FILE
        if self._fd is not None:
            try:
                if os.stat(path).st_ino == os.fstat(self._fd).st_ino:
                    return self._fd
            except FileNotFoundError:
                pass
            os.close(self._fd)
            self._fd = None
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        return self._fd

    def _resume(self) -> ChainHead:
        """Where the chain goes on: the kept head, else the last chained line."""
        assert self.dir is not None
        drop_torn_tail(self.dir / FILE)
        try:
            head = read_head(self.dir, self.key, unkeyed_ok=True)
            if head is not None and not head.keyed and last_is_keyed(self.dir):
                # Only a trail written before the data owner had keys may have
                # a head without a MAC; this one has MACed lines.
                raise StateIntegrityError(
                    "the audit trail's head carries no MAC although its lines do"
                )
        except StateIntegrityError as exc:
            logger.warning("%s; the trail goes on from its last line", exc)
            head = None
        if head is not None:
            return head  # a cut-off end stays visible: the next line names the head
        last, first = last_chained(self.dir)
        # Lines with no chain fields (an older syft_flwr) are counted into the
        # head, so none can be added in front of the chain later unnoticed.
        legacy = count_unchained(self.dir)
        if last is None:  # a new trail, or one written before it was chained
            return ChainHead(0, ZERO_HASH, 0, legacy)
        # Chained lines but no valid head: say so in the trail itself, so that
        # a head removed to hide a cut-off end is never silent.
        logger.warning(
            "the audit trail's head was missing or failed its check; the removal "
            "of lines at its end before now cannot be ruled out"
        )
        seq, digest = last
        line = seal_line(
            {"ts": round(self.clock(), 3), "event": "head_lost"},
            seq + 1,
            digest,
            self.key,
        )
        os.write(self._current_fd(), line + b"\n")
        return ChainHead(seq + 1, line_hash(line), first or 1, legacy)

    def _rotate(self, head: ChainHead) -> ChainHead:
        """Start a new current file; the chain goes on into it."""
        assert self.dir is not None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        for i in range(self.keep - 1, 0, -1):
            older = self.dir / f"audit.{i}.jsonl"
            if older.exists():
                os.replace(older, self.dir / f"audit.{i + 1}.jsonl")
        os.replace(self.dir / FILE, self.dir / "audit.1.jsonl")
        extra = self.dir / f"audit.{self.keep + 1}.jsonl"
        if extra.exists():
            extra.unlink()
        # The head learns which line is now the oldest kept, so removing a
        # kept file is not mistaken for this.
        _, first = last_chained(self.dir, oldest_only=True)
        return ChainHead(head.seq, head.hash, first or head.first, head.legacy)

    def entries(self, since: float | None = None) -> list[dict[str, Any]]:
        """Every kept event, oldest first (optionally only from ``since`` on)."""
        if self.dir is None:
            with self._lock:
                out = list(self._memory)
        else:
            out = read_audit(self.dir)
        return [e for e in out if since is None or float(e.get("ts", 0)) >= since]


def read_audit(directory: Path) -> list[dict[str, Any]]:
    """Read every kept audit file in ``directory``, oldest first.

    A line that is not a JSON object (a torn last line) is skipped; the chain
    fields ``prev`` and ``mac`` are left out (``seq`` is kept).
    """
    out: list[dict[str, Any]] = []
    for _path, _n, raw, _torn in trail_lines(directory):
        entry = parse_line(raw)
        if entry is not None:
            entry.pop("prev", None)
            entry.pop("mac", None)
            out.append(entry)
    return out


def audit_key(client: Any) -> StateKey | None:
    """``StateKey(keys, "audit")`` of ``client``; None if it has no keys yet."""
    from syft_flwr.crypto.policy import load_keys

    try:
        return StateKey(load_keys(client), "audit")
    except KeyNotFound:
        return None


def verify_audit(client: Any | None = None) -> AuditReport:
    """Check this data owner's audit trail (``syft_flwr audit --verify``).

    Parameters
    ----------
    client:
        The data owner's ``SyftFlwrClient`` (``create_client()`` if None).

    Returns
    -------
    AuditReport
        ``status`` is ``"intact"``, ``"tampered"``, ``"unverifiable"`` or
        ``"empty"``; ``problems`` and ``notes`` say what was found, in words.
    """
    from syft_flwr.client.factory import create_client, wrap_client

    c = wrap_client(client) if client is not None else create_client()
    state = c.state_dir("audit")
    if state is None:
        return AuditReport(notes=["this identity keeps its audit trail in memory"])
    return verify_trail(Path(state), audit_key(c))


def audit_entries(
    client: Any | None = None, since: float | None = None
) -> list[dict[str, Any]]:
    """The audit trail of this data owner (``create_client()`` if ``client`` is None).

    Parameters
    ----------
    client:
        The data owner's ``SyftFlwrClient``.
    since:
        Only events at or after this POSIX time.

    Returns
    -------
    list of dict
        Events oldest first: ``ts``, ``event`` (received, refused, run,
        replied), ``id``, ``app``, ``sender`` and the event's own fields.
    """
    from syft_flwr.client.factory import create_client, wrap_client

    c = wrap_client(client) if client is not None else create_client()
    return AuditLog.for_client(c).entries(since)
