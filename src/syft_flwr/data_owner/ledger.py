"""Durable record of what a data owner did with each request, and its stored replies.

(Size: over 400 lines because the log, the request states and the reply aliases with
their budget are one state under one lock, read and compacted together; the
reply files themselves are in :mod:`~syft_flwr.data_owner.reply_store`.)

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

A stored reply may also be kept under an *alias* (the data owner's reply cache
uses the request's fingerprint, so a request re-sent under a new id by a resumed
researcher gets it without the ClientApp running again): the reply is written
once, here, and the alias only points at it. The newest ``keep_aliases`` aliased
replies, up to ``keep_alias_bytes`` in all (the newest one always), are kept
whatever their request's expiry; older ones go with their request.

A reply with attachments (large arrays, sealed by the transport layer) is kept
without writing it again: its sealed chunk files get a second name in
``replies/`` (a hard link, where the state folder and the datasites share a
disk), and the stored reply holds their references and content keys. It is
checked and opened again only if it is ever re-sent. The files themselves are
kept by :class:`~syft_flwr.data_owner.reply_store.ReplyStore` (``Ledger.replies``);
the ledger decides which replies are kept, under which aliases, and how long.

The ledger and its kept replies are private state the data owner acts on (it
re-sends a kept reply, sealed, as its own), so with a key
(:class:`~syft_flwr.crypto.state_mac.StateKey`, purpose ``"ledger"``) every log
line carries a tag over its fields, and every kept reply file a trailing tag over
the request id, the sender it answers, its status and the hash of its bytes
(computed as they are written; a reply with attachments tags its small record of
references and content keys, and the chunks are checked again by decryption).
A log line that fails (changed, or written by an older version) marks the id it
names :data:`TAINTED`: never run, never answered with a kept reply. A kept reply
that fails is never sent (:class:`~syft_flwr.errors.StateIntegrityError`).

Entries and stored replies are trimmed once the request's expiry has passed
(plus a grace period); the log is compacted when it grows. ``executed.log``
from older versions is read as ``replied``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from syft_flwr.client.protocol import SyftFlwrClient
from syft_flwr.crypto.state_mac import StateKey
from syft_flwr.data_owner.reply_store import ReplyStore
from syft_flwr.errors import StateIntegrityError
from syft_flwr.wire import frames
from syft_flwr.wire.blobs import ATTACHED_MAGIC

logger = logging.getLogger(__name__)

__all__ = [
    "Ledger",
    "LedgerEntry",
    "RECEIVED",
    "REPLIED",
    "RUNNING",
    "STORED",
    "TAINTED",
    "open_ledger",
]

RECEIVED, RUNNING, STORED, REPLIED = "received", "running", "stored", "replied"
#: An id whose record failed its integrity check: never run nor answered again.
TAINTED = "tainted"
_ORDER = {RECEIVED: 0, RUNNING: 1, STORED: 2, REPLIED: 3, TAINTED: 4}
#: Entries are kept this long past their request's expiry (late resends, clock skew).
KEEP_AFTER_EXPIRY = 3600.0  # seconds
#: Compact the log when it holds this many more lines than live entries.
COMPACT_SLACK = 1000
#: Expiry of entries that never expire (ids from older versions' logs).
NEVER = 1e18
#: How many aliased replies (the data owner's reply cache) are kept.
DEFAULT_KEEP_ALIASES = 8
#: ...and how many bytes of them at most (the newest is always kept): with a
#: 1 GB model, 8 replies would hold 8 GB of the data owner's disk.
DEFAULT_KEEP_ALIAS_BYTES = 2 * 1024**3
#: Stored-reply file name prefix of a reply kept under an alias only (no request
#: id: ``+`` never occurs in one, so no request can name this file).
_ALIAS_ONLY = "alias+"


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
    ``state_key`` (``StateKey(keys, "ledger")``) authenticates the log and the
    kept replies; without it (no identity key) they are taken on trust.
    """

    FILE = "ledger.jsonl"
    LEGACY_FILE = "executed.log"
    REPLIES = "replies"

    def __init__(
        self,
        state_dir: Path | None,
        *,
        clock: Callable[[], float] = time.time,
        keep_aliases: int = DEFAULT_KEEP_ALIASES,
        keep_alias_bytes: int = DEFAULT_KEEP_ALIAS_BYTES,
        state_key: StateKey | None = None,
    ) -> None:
        self._mac = state_key
        self._lock = threading.Lock()
        self._clock = clock
        self._entries: dict[str, LedgerEntry] = {}
        #: alias -> id of the stored reply it names, oldest first.
        self._aliases: dict[str, str] = {}
        #: ids whose reply the requester has read, kept only for an alias.
        self._released: set[str] = set()
        self.keep_aliases = keep_aliases
        self.keep_alias_bytes = keep_alias_bytes
        #: Bytes of each aliased stored reply (its plaintext size).
        self._sizes: dict[str, int] = {}
        self._lines = 0
        self._fd: int | None = None
        self.dir = None if state_dir is None else Path(state_dir)
        self.path = None if self.dir is None else self.dir / self.FILE
        if self.dir is not None:
            self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        #: The kept replies' files (the ledger decides which are kept).
        self.replies = ReplyStore(
            None if self.dir is None else self.dir / self.REPLIES, state_key
        )
        if self.dir is not None:
            self._load()
            self._sizes = self.replies.scan(set(self._aliases.values()))

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
        tainted: set[str] = set()
        if self.path.exists():
            for line in self.path.read_text(errors="replace").splitlines():
                self._lines += 1
                try:  # a torn last line (crash mid-write) is skipped
                    rec = json.loads(line)
                    mid = str(rec["id"])
                    alias = rec.get("fp")
                    entry = (
                        None
                        if "s" not in rec  # an alias record only
                        else LedgerEntry(mid, str(rec["s"]), float(rec["exp"]))
                    )
                except (ValueError, KeyError, TypeError, AttributeError):
                    continue
                if mid in tainted or not self._authentic(rec):
                    tainted.add(mid)  # once tainted, no later line clears it
                    self._taint(mid)
                    continue
                if entry is not None and entry.state in _ORDER:
                    self._entries[mid] = entry
                if isinstance(alias, str):
                    self._aliases.pop(alias, None)  # newest last
                    self._aliases[alias] = mid
        if tainted:
            logger.warning(
                "%d record(s) in this data owner's request ledger %s failed their "
                "integrity check (changed by someone who can write the state "
                "folder, or written by an older version); the requests they name "
                "are not run or answered again: %s",
                len(tainted),
                self.path,
                ", ".join(sorted(tainted)[:10]),
            )
        while len(self._aliases) > self.keep_aliases:
            self._aliases.pop(next(iter(self._aliases)))

    def _fields(self, rec: dict[str, object]) -> tuple[str, ...]:
        """What a log line's tag covers (the expiry as its JSON text)."""
        exp = rec.get("exp")
        return (
            "line",
            str(rec.get("id")),
            str(rec.get("s", "")),
            "" if exp is None else json.dumps(exp),
            str(rec.get("fp", "")),
        )

    def _authentic(self, rec: dict[str, object]) -> bool:
        if self._mac is None:
            return True  # no key: taken on trust (logged where the key was sought)
        tag = rec.get("t")
        try:
            self._mac.verify(
                tag if isinstance(tag, str) else "", *self._fields(rec), what="line"
            )
        except StateIntegrityError:
            return False
        return True

    def _taint(self, mid: str) -> None:
        """Never act on ``mid`` again.

        Its claimed expiry is not trusted either (a past one would let it be
        trimmed and the request run again): it is kept until the ledger is
        removed by hand.
        """
        self._entries[mid] = LedgerEntry(mid, TAINTED, NEVER)
        for alias in [a for a, m in self._aliases.items() if m == mid]:
            del self._aliases[alias]

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
    @property
    def authenticated(self) -> bool:
        """Whether records and kept replies are checked with the owner's key."""
        return self._mac is not None

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
            self._mark_locked(mid, state, expires_at, durable=durable)

    def _mark_locked(
        self,
        mid: str,
        state: str,
        expires_at: float,
        *,
        durable: bool,
        alias: str | None = None,
    ) -> None:
        old = self._entries.get(mid)
        if old is not None and _ORDER[old.state] >= _ORDER[state]:
            if alias is None:
                return
            state = old.state  # the alias is news even if the state is not
        self._entries[mid] = LedgerEntry(mid, state, expires_at)
        rec: dict[str, object] = {"id": mid, "s": state, "exp": float(expires_at)}
        if alias is not None:
            rec["fp"] = alias
        self._append_locked(rec, durable=durable)

    def _append_locked(self, rec: dict[str, object], *, durable: bool) -> None:
        if self.path is None:
            return
        line = json.dumps(self._tagged(rec)) + "\n"
        if self._fd is None:  # kept open: one open per process, not per mark
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.write(self._fd, line.encode())
        if durable:
            os.fsync(self._fd)
        self._lines += 1

    def _tagged(self, rec: dict[str, object]) -> dict[str, object]:
        if self._mac is not None:
            rec["t"] = self._mac.tag_hex(*self._fields(rec))
        return rec

    def add(self, mid: str) -> None:
        """Record ``mid`` as replied (the simple form older callers use)."""
        self.mark(mid, REPLIED, NEVER)

    # -- stored replies -------------------------------------------------------------
    def store_reply(
        self,
        mid: str,
        status: int,
        body: bytes,
        expires_at: float,
        *,
        durable: bool = True,
        alias: str | None = None,
        size: int | None = None,
        peer: str = "",
    ) -> None:
        """Keep the reply (fsynced with ``durable``), then mark ``mid`` ``stored``.

        ``peer`` is who the reply answers; with a key it is bound into the kept
        reply's tag (see :meth:`stored_reply`).

        A reply already delivered is kept without an fsync (it only serves a
        rare resend); one that still has to be delivered is kept durably (or
        made so later with :meth:`sync_reply`). With ``alias`` the same file
        is also found by :meth:`alias_reply` (no second copy is written).
        """
        self.replies.write(mid, status, body, durable=durable, peer=peer)
        with self._lock:
            # The reply file itself is the durable record; a lost "stored" line
            # only leaves "running" plus a kept reply, which is read the same way.
            self._mark_locked(mid, STORED, expires_at, durable=False, alias=alias)
            evicted = (
                []
                if alias is None
                else self._add_alias_locked(alias, mid, size or frames.total_size(body))
            )
        self.replies.delete(evicted)

    def store_sealed(
        self,
        mid: str,
        status: int,
        attached: bytes | memoryview,
        link: Callable[[Path, str], bool],
        expires_at: float,
        *,
        size: int,
        durable: bool = True,
        alias: str | None = None,
        peer: str = "",
    ) -> bool:
        """Keep a reply whose attachments are already stored, sealed, by linking them.

        ``attached`` is the sealed body's plaintext (references with content
        keys, then the body without its parts); ``link(folder, stem)`` gives
        each attachment chunk a name ``<stem>.a<k>.<nnnnnn>.chunk`` in
        ``folder`` (see :meth:`syft_flwr.wire.mailbox.SyftFlwrRpc.link_parts`); ``size``
        is the reply's plaintext size, attachments included. Returns
        False, keeping nothing, when there is no state folder or the chunks
        cannot be linked: the caller then stores the reply itself
        (:meth:`store_reply`).
        """
        magic = bytes(memoryview(attached)[: len(ATTACHED_MAGIC)])
        if magic != ATTACHED_MAGIC or not self.replies.link(mid, link):
            return False
        self.store_reply(
            mid,
            status,
            bytes(attached),  # references and the framed prefix only: small
            expires_at,
            durable=durable,
            alias=alias,
            size=size,
            peer=peer,
        )
        return True

    def keep_alias(self, alias: str, body: bytes, *, durable: bool = True) -> None:
        """Keep a successful reply under ``alias`` only (no request id names it)."""
        mid = _ALIAS_ONLY + hashlib.sha256(alias.encode()).hexdigest()[:40]
        self.replies.write(mid, 200, body, durable=durable)
        with self._lock:
            self._append_locked({"id": mid, "fp": alias}, durable=False)
            evicted = self._add_alias_locked(alias, mid, frames.total_size(body))
        self.replies.delete(evicted)

    def sync_reply(self, mid: str) -> None:
        """Make the kept reply of ``mid`` durable (a reply that could not leave).

        The file and the folder entry are fsynced: the reply survives a crash
        of the machine and is sent when the data owner serves again.
        """
        self.replies.sync(mid)

    def _over_budget_locked(self) -> bool:
        if len(self._aliases) > self.keep_aliases:
            return True
        named = set(self._aliases.values())
        return (
            len(named) > 1
            and sum(self._sizes.get(m, 0) for m in named) > self.keep_alias_bytes
        )

    def _add_alias_locked(
        self, alias: str, mid: str, size: int | None = None
    ) -> list[str]:
        """Point ``alias`` at ``mid``; return ids whose reply nothing needs any more.

        The oldest aliases go while there are more than ``keep_aliases`` or
        their replies hold more than ``keep_alias_bytes`` (never the newest).
        """
        self._aliases.pop(alias, None)
        self._aliases[alias] = mid
        if size is not None:
            self._sizes[mid] = size
        evicted: list[str] = []
        while self._over_budget_locked():
            old = self._aliases.pop(next(iter(self._aliases)))
            if old in self._aliases.values():
                continue  # still named by a newer alias
            self._sizes.pop(old, None)
            if old not in self._entries or old in self._released:
                self._released.discard(old)
                evicted.append(old)
        return evicted

    def stored_reply(
        self, mid: str, peer: str | None = None
    ) -> tuple[int, bytes] | None:
        """The stored ``(status, body)`` of ``mid``, if it is still kept.

        A reply kept with its sealed attachments (:meth:`store_sealed`) comes
        back as a :class:`~syft_flwr.wire.frames.FramedBody`, its chunks checked and
        opened; one that no longer opens is reported and treated as gone.
        With ``peer``, a reply kept for another sender is not returned.

        Raises
        ------
        StateIntegrityError
            With a key: the kept reply (or the ledger's record of ``mid``)
            failed its integrity check or carries no tag. It must not be sent.
        """
        if self.dir is not None and self.state(mid) == TAINTED:
            raise StateIntegrityError(
                f"the data owner's record of request {mid} failed its integrity "
                "check; its kept reply is not sent"
            )
        return self.replies.read(mid, peer)

    def alias_reply(self, alias: str) -> tuple[int, bytes] | None:
        """The stored reply ``alias`` names (see :meth:`store_reply`), if kept."""
        with self._lock:
            mid = self._aliases.get(alias)
        return None if mid is None else self.stored_reply(mid)

    def drop_reply(self, mid: str) -> None:
        """Forget the stored reply of ``mid`` (the requester has read it).

        A reply an alias still names is kept for it (until newer aliases push
        it out).
        """
        with self._lock:
            if mid in self._aliases.values():
                self._released.add(mid)
                return
        self.replies.delete([mid])

    # -- housekeeping -------------------------------------------------------------
    def trim(self) -> int:
        """Drop entries (and stored replies) long past their expiry; compact the log.

        Replies an alias names stay until newer aliases push them out; stray
        reply files (a crash between writing and recording) are removed.
        Returns how many entries were dropped.
        """
        now = self._clock()
        with self._lock:
            old = [
                m
                for m, e in self._entries.items()
                if e.expires_at + KEEP_AFTER_EXPIRY < now
            ]
            aliased = set(self._aliases.values())
            for m in old:
                del self._entries[m]
                self._released.discard(m)
            if self.path is not None and (
                old
                or self._lines > len(self._entries) + len(self._aliases) + COMPACT_SLACK
                or (self.path.parent / self.LEGACY_FILE).exists()
            ):
                # Under the lock: no mark() may append between snapshot and swap.
                self._rewrite_locked(list(self._entries.values()))
            keep = set(self._entries) | aliased
        self.replies.delete([m for m in old if m not in aliased])
        self.replies.sweep(keep, now)
        return len(old)

    def _rewrite_locked(self, entries: list[LedgerEntry]) -> None:
        assert self.path is not None and self.dir is not None
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w") as f:
            for e in entries:  # a tainted id stays refused, now under our tag
                rec = {"id": e.mid, "s": e.state, "exp": float(e.expires_at)}
                f.write(json.dumps(self._tagged(rec)))
                f.write("\n")
            for alias, mid in self._aliases.items():  # oldest first, as loaded
                f.write(json.dumps(self._tagged({"id": mid, "fp": alias})))
                f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self._close_fd()  # the next mark appends to the new file
        self._lines = len(entries) + len(self._aliases)
        legacy = self.dir / self.LEGACY_FILE
        if legacy.exists():  # folded into the new log above
            legacy.unlink()


def open_ledger(
    state_dir: Path | None,
    client: SyftFlwrClient,
    policy: object,
    clock: Callable[[], float] = time.time,
) -> Ledger:
    """The data owner's ledger in ``state_dir``, authenticated with its own key.

    The key is derived from the data owner's identity key (see
    :func:`~syft_flwr.crypto.own_state.state_key_for`); without one the ledger
    is taken on trust, which is logged once.
    """
    from syft_flwr.crypto.own_state import state_key_for

    key = None if state_dir is None else state_key_for(client, policy, "ledger")
    return Ledger(state_dir, clock=clock, state_key=key)
