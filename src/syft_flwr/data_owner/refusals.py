"""Refusal logging that a flood cannot turn against the audit trail.

Anyone who can write a request file can make a data owner refuse it. Logged one
line each, ~84,000 tiny requests would rotate every real entry out of the trail,
and every restart would log the same hostile files again. So refusals are:

* **remembered**: a request file refused (or ignored) once is never logged again,
  in this process or after a restart. The memory is ``refusals.log`` next to the
  trail: one line per file (a hash of its key, the time, and a MAC under the
  trail's key, so nobody else can add lines to silence the log). Entries older
  than ``RETENTION`` are dropped when the data owner starts.
* **aggregated per sender and folder**: the first ``DETAIL`` refusals of a sender
  in one folder within ``WINDOW`` seconds are logged in full; the rest are
  counted and written as one ``refused`` line with ``count`` when the window
  ends (or the data owner stops). At most ``MAX_GROUPS`` senders are tracked per
  window; more are counted together under ``sender="(other senders)"``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from syft_flwr.crypto.state_mac import StateKey
from syft_flwr.data_owner.audit import AuditLog
from syft_flwr.errors import StateIntegrityError

__all__ = ["DETAIL", "MAX_GROUPS", "RETENTION", "WINDOW", "RefusalLog"]

logger = logging.getLogger("syft_flwr.events")

#: Refusals of one sender in one folder logged in full per window.
DETAIL = 3
#: Seconds of one aggregation window.
WINDOW = 3600.0
#: Senders tracked separately per window (the rest are counted together).
MAX_GROUPS = 100
#: Seconds a refused file is remembered (requests expire long before).
RETENTION = 7 * 86400.0
#: Remembered files at most (the oldest are forgotten first).
MAX_REMEMBERED = 200_000
FILE = "refusals.log"
OTHERS = "(other senders)"


@dataclass
class _Group:
    """Refusals of one sender in one folder, in the current window."""

    app: str = ""
    count: int = 0
    first: float = 0.0
    status: int = 0
    reason: str = ""


class RefusalLog:
    """Log each refused request file once ever, in full up to a quota per sender.

    Parameters
    ----------
    audit : AuditLog
        The data owner's trail; its folder and key also keep the memory.
    clock : callable
        POSIX time source.
    """

    def __init__(
        self, audit: AuditLog, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.audit = audit
        self.clock = clock
        self._key: StateKey | None = audit.key
        self._path = None if audit.dir is None else audit.dir / FILE
        self._seen: dict[str, float] = {}
        self._groups: dict[tuple[str, str], _Group] = {}
        self._window_end = 0.0
        self._fd: int | None = None
        self._load()

    # -- public ---------------------------------------------------------------
    def first_time(self, key: str) -> bool:
        """Remember ``key``; whether it was new (then it is worth logging)."""
        digest = hashlib.sha256(key.encode()).hexdigest()[:32]
        if digest in self._seen:
            return False
        now = self.clock()
        self._seen[digest] = now
        self._append(digest, now)
        return True

    def refused(
        self,
        key: str,
        *,
        mid: str,
        app: str,
        folder: str,
        sender: str,
        status: int,
        reason: str,
    ) -> None:
        """Log the refusal of the request file at ``key`` (once, within quota)."""
        if not self.first_time(key):
            logger.debug(
                "refused request %s from %s again (logged before)", mid, sender
            )
            return
        if not self._count(sender, app, folder, status, reason):
            return
        logger.warning("refused request %s from %s: %s", mid, sender, reason)
        self.audit.record(
            "refused",
            id=mid,
            app=app,
            folder=folder,
            sender=sender,
            status=status,
            reason=reason,
        )

    def flush_due(self) -> None:
        """Write the counts of a window that has ended."""
        if self._groups and self.clock() >= self._window_end:
            self.flush()

    def flush(self) -> None:
        """Write one ``refused`` line with ``count`` per sender and folder over quota."""
        for (sender, folder), g in self._groups.items():
            # Past MAX_GROUPS no refusal was logged in full: count them all.
            extra = g.count if sender == OTHERS else g.count - DETAIL
            if extra <= 0:
                continue
            logger.warning(
                "refused %d more request(s) from %s in %s (last: %s)",
                extra,
                sender,
                folder,
                g.reason,
            )
            self.audit.record(
                "refused",
                app=g.app,
                folder=folder,
                sender=sender,
                status=g.status,
                reason=g.reason,
                count=extra,
                since=round(g.first, 3),
            )
        self._groups.clear()
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.fsync(self._fd)

    def close(self) -> None:
        """Flush the counts and close the memory file."""
        self.flush()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    # -- internals ------------------------------------------------------------
    def _count(
        self, sender: str, app: str, folder: str, status: int, reason: str
    ) -> bool:
        """Count one refusal; whether it is within the quota (log it in full)."""
        now = self.clock()
        if now >= self._window_end:
            self.flush()
            self._window_end = now + WINDOW
        group = (sender, folder)
        if group not in self._groups and len(self._groups) >= MAX_GROUPS:
            group = (OTHERS, folder)
        g = self._groups.setdefault(group, _Group(app=app, first=now))
        g.count += 1
        g.status, g.reason = status, reason
        return g.count <= DETAIL and group[0] != OTHERS

    def _line(self, digest: str, ts: float) -> bytes:
        stamp = f"{ts:.0f}"
        tag = "-" if self._key is None else self._key.tag_hex("refusal", digest, stamp)
        return f"{digest} {stamp} {tag}\n".encode()

    def _append(self, digest: str, ts: float) -> None:
        if self._path is None:
            return
        try:
            if self._fd is None:
                self._fd = os.open(
                    self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600
                )
            # Not fsynced per line: a crash forgets a few, which are then
            # logged once more (never the reverse).
            os.write(self._fd, self._line(digest, ts))
        except OSError:
            logger.exception("could not remember a refused request")

    def _load(self) -> None:
        """Read the memory back: only lines with a valid MAC, not too old."""
        if self._path is None:
            return
        try:
            data = self._path.read_bytes()
        except FileNotFoundError:
            return
        cutoff = self.clock() - RETENTION
        bad = 0
        lines = data.split(b"\n")
        for raw in lines:
            entry = self._parse(raw)
            if entry is None:
                bad += bool(raw)
            elif entry[1] >= cutoff:
                self._seen[entry[0]] = entry[1]
        if bad:
            logger.warning(
                "%d line(s) of %s failed their integrity check and were ignored "
                "(those refusals may be logged again)",
                bad,
                self._path,
            )
        if bad or len(self._seen) < len(lines) - 1 or len(self._seen) > MAX_REMEMBERED:
            self._compact()

    def _parse(self, raw: bytes) -> tuple[str, float] | None:
        parts = raw.split(b" ")
        if len(parts) != 3 or len(parts[0]) != 32 or not parts[1].isdigit():
            return None
        try:
            digest, stamp, tag = (p.decode("ascii") for p in parts)
        except UnicodeDecodeError:
            return None
        if self._key is not None:
            try:
                self._key.verify(tag, "refusal", digest, stamp, what="refusal memory")
            except StateIntegrityError:
                return None
        return digest, float(stamp)

    def _compact(self) -> None:
        """Rewrite the memory with the entries kept (atomically)."""
        assert self._path is not None
        keep = sorted(self._seen.items(), key=lambda kv: kv[1])[-MAX_REMEMBERED:]
        self._seen = dict(keep)
        tmp = self._path.with_name(FILE + ".tmp")
        try:
            with open(tmp, "wb") as f:
                f.writelines(self._line(d, ts) for d, ts in keep)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self._path)
        except OSError:
            logger.exception("could not rewrite %s", self._path)
