"""Durable record of what a data owner did with each request, and its stored replies.

Every request moves ``received -> running -> stored -> replied``; each step is
appended to ``<state_dir>/ledger.jsonl`` before the next one starts. The two
steps that decide correctness are fsynced: ``running`` (so a request is never
run twice) and the stored reply file (so a finished result is never lost);
``received`` and ``replied`` are re-derivable, so they are not. After a crash
the data owner knows, for every id it has seen:

* ``received``: read and checked, not started: safe to run.
* ``running``: the handler started and no reply was stored: it may have run
  (side effects) and is not run again; the requester is told so (or, if its
  reply file was kept, gets that reply).
* ``stored``: the handler finished and its reply is in ``<state_dir>/replies``:
  the reply is (re)sent, the handler never runs again.
* ``replied``: the reply is on the transport. A resend of the same id gets the
  stored reply again while it is kept, never a false "already executed".

Entries and stored replies are trimmed once the request's expiry has passed
(plus a grace period); the log is compacted when it grows. ``executed.log``
from older versions is read as ``replied``.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Ledger", "LedgerEntry", "RECEIVED", "REPLIED", "RUNNING", "STORED"]

RECEIVED, RUNNING, STORED, REPLIED = "received", "running", "stored", "replied"
_ORDER = {RECEIVED: 0, RUNNING: 1, STORED: 2, REPLIED: 3}
#: Entries are kept this long past their request's expiry (late resends, clock skew).
KEEP_AFTER_EXPIRY = 3600.0  # seconds
#: Compact the log when it holds this many more lines than live entries.
COMPACT_SLACK = 1000
#: Expiry of entries that never expire (ids from older versions' logs).
NEVER = 1e18


@dataclass(frozen=True)
class LedgerEntry:
    """The latest state of one request id."""

    mid: str
    state: str
    expires_at: float


class Ledger:
    """Per-request states and stored replies in a private state folder.

    With ``state_dir=None`` everything lives in memory only (tests, notebooks).
    Ids are validated by the caller (``envelope.ID_PATTERN``): never a path.
    """

    FILE = "ledger.jsonl"
    LEGACY_FILE = "executed.log"
    REPLIES = "replies"

    def __init__(
        self, state_dir: Path | None, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._entries: dict[str, LedgerEntry] = {}
        self._memory_replies: dict[str, tuple[int, bytes]] = {}
        self._lines = 0
        self._fd: int | None = None
        self.dir = None if state_dir is None else Path(state_dir)
        self.path = None if self.dir is None else self.dir / self.FILE
        if self.dir is not None:
            self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            (self.dir / self.REPLIES).mkdir(exist_ok=True, mode=0o700)
            self._load()

    # -- loading ----------------------------------------------------------------
    def _load(self) -> None:
        assert self.dir is not None and self.path is not None
        legacy = self.dir / self.LEGACY_FILE
        if legacy.exists():
            # Older versions recorded an id before running it and kept no reply.
            for line in legacy.read_text(errors="replace").splitlines():
                if line.strip():
                    mid = line.strip()
                    self._entries[mid] = LedgerEntry(mid, REPLIED, NEVER)
        if self.path.exists():
            for line in self.path.read_text(errors="replace").splitlines():
                self._lines += 1
                try:  # our own file; a torn last line (crash mid-write) is skipped
                    rec = json.loads(line)
                    entry = LedgerEntry(
                        str(rec["id"]), str(rec["s"]), float(rec["exp"])
                    )
                except (ValueError, KeyError, TypeError):
                    continue
                if entry.state in _ORDER:
                    self._entries[entry.mid] = entry

    def _close_fd(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None

    def close(self) -> None:
        """Close the log file (it is reopened if marked again)."""
        with self._lock:
            self._close_fd()

    def __del__(self) -> None:
        self._close_fd()

    # -- queries ----------------------------------------------------------------
    def __contains__(self, mid: object) -> bool:
        with self._lock:
            return mid in self._entries

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def state(self, mid: str) -> str | None:
        """The latest state of ``mid``, or ``None`` if never seen."""
        with self._lock:
            e = self._entries.get(mid)
            return None if e is None else e.state

    def entries(self) -> list[LedgerEntry]:
        with self._lock:
            return list(self._entries.values())

    # -- transitions --------------------------------------------------------------
    def mark(
        self, mid: str, state: str, expires_at: float, *, durable: bool = True
    ) -> None:
        """Record ``state`` for ``mid``; with ``durable``, fsynced before returning.

        States only move forward; an older state is ignored. Without
        ``durable`` the line survives a crash of the process (it is in the
        kernel) but maybe not of the machine; the next durable mark persists it.
        """
        if state not in _ORDER:
            raise ValueError(f"unknown ledger state {state!r}")
        with self._lock:
            old = self._entries.get(mid)
            if old is not None and _ORDER[old.state] >= _ORDER[state]:
                return
            self._entries[mid] = LedgerEntry(mid, state, expires_at)
            if self.path is None:
                return
            line = json.dumps({"id": mid, "s": state, "exp": expires_at}) + "\n"
            if self._fd is None:  # kept open: one open per process, not per mark
                self._fd = os.open(
                    self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600
                )
            os.write(self._fd, line.encode())
            if durable:
                os.fsync(self._fd)
            self._lines += 1

    def add(self, mid: str) -> None:
        """Record ``mid`` as replied (the simple form older callers use)."""
        self.mark(mid, REPLIED, NEVER)

    # -- stored replies -------------------------------------------------------------
    def _reply_path(self, mid: str) -> Path:
        assert self.dir is not None
        return self.dir / self.REPLIES / f"{mid}.reply"

    def store_reply(
        self,
        mid: str,
        status: int,
        body: bytes,
        expires_at: float,
        *,
        durable: bool = True,
    ) -> None:
        """Keep the reply (fsynced with ``durable``), then mark ``mid`` ``stored``.

        A reply already delivered is kept without an fsync (it only serves a
        rare resend); one that still has to be delivered is kept durably.
        """
        if self.dir is None:
            with self._lock:
                self._memory_replies[mid] = (status, bytes(body))
        else:
            path = self._reply_path(mid)
            tmp = path.with_name(path.name + ".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, status.to_bytes(2, "big"))
                view = memoryview(body)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
                if durable:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        # The reply file itself is the durable record; a lost "stored" line only
        # leaves "running" plus a kept reply, which is read the same way.
        self.mark(mid, STORED, expires_at, durable=False)

    def stored_reply(self, mid: str) -> tuple[int, bytes] | None:
        """The stored ``(status, body)`` of ``mid``, if it is still kept."""
        if self.dir is None:
            with self._lock:
                return self._memory_replies.get(mid)
        try:
            data = self._reply_path(mid).read_bytes()
        except OSError:
            return None
        if len(data) < 2:
            return None
        return int.from_bytes(data[:2], "big"), data[2:]

    def drop_reply(self, mid: str) -> None:
        """Forget the stored reply of ``mid`` (the requester has read it)."""
        if self.dir is None:
            with self._lock:
                self._memory_replies.pop(mid, None)
            return
        try:
            self._reply_path(mid).unlink()
        except FileNotFoundError:
            pass

    # -- housekeeping -------------------------------------------------------------
    def trim(self) -> int:
        """Drop entries (and stored replies) long past their expiry; compact the log.

        Returns how many entries were dropped.
        """
        now = self._clock()
        with self._lock:
            old = [
                m
                for m, e in self._entries.items()
                if e.expires_at + KEEP_AFTER_EXPIRY < now
            ]
            for m in old:
                del self._entries[m]
                self._memory_replies.pop(m, None)
            if self.path is not None and (
                old
                or self._lines > len(self._entries) + COMPACT_SLACK
                or (self.path.parent / self.LEGACY_FILE).exists()
            ):
                # Under the lock: no mark() may append between snapshot and swap.
                self._rewrite_locked(list(self._entries.values()))
        if self.dir is not None:
            for m in old:
                self.drop_reply(m)
        return len(old)

    def _rewrite_locked(self, entries: list[LedgerEntry]) -> None:
        assert self.path is not None and self.dir is not None
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w") as f:
            for e in entries:
                f.write(json.dumps({"id": e.mid, "s": e.state, "exp": e.expires_at}))
                f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self._close_fd()  # the next mark appends to the new file
        self._lines = len(entries)
        legacy = self.dir / self.LEGACY_FILE
        if legacy.exists():  # folded into the new log above
            legacy.unlink()
