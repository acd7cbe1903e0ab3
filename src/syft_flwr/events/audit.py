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
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from syft_flwr._printable import printable

__all__ = ["AuditLog", "audit_entries", "format_audit", "read_audit"]

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
    """

    def __init__(
        self,
        directory: Path | None,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        keep: int = DEFAULT_KEEP,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.dir = None if directory is None else Path(directory)
        self.max_bytes = max_bytes
        self.keep = keep
        self.clock = clock
        self._lock = threading.Lock()
        self._memory: list[dict[str, Any]] = []
        self._last_sync = float("-inf")
        self._fd: int | None = None
        self._size = -1  # bytes in the current file; -1: not looked at yet
        if self.dir is not None:
            self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)

    @classmethod
    def for_client(cls, client: Any, **kwargs: Any) -> AuditLog:
        """The audit trail of ``client``'s identity (all apps)."""
        state = client.state_dir("audit")
        return cls(None if state is None else Path(state), **kwargs)

    def close(self) -> None:
        """Close the trail's file (reopened at the next event)."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def __del__(self) -> None:
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
                self._rotate_if_needed()
                line = (json.dumps(entry, sort_keys=True) + "\n").encode()
                if self._fd is None:  # kept open between events
                    self._fd = os.open(
                        self.dir / FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600
                    )
                os.write(self._fd, line)
                self._size += len(line)
                now = time.monotonic()
                if now - self._last_sync >= SYNC_EVERY:
                    os.fsync(self._fd)
                    self._last_sync = now
            except OSError:  # the audit must never stop the serving loop
                import logging

                logging.getLogger("syft_flwr.audit").exception(
                    "could not write the audit trail"
                )

    def _rotate_if_needed(self) -> None:
        assert self.dir is not None
        current = self.dir / FILE
        if self._size < 0:  # first write of this process: learn the size once
            try:
                self._size = current.stat().st_size
            except FileNotFoundError:
                self._size = 0
        if self._size < self.max_bytes:
            return
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._size = 0
        for i in range(self.keep - 1, 0, -1):
            older = self.dir / f"audit.{i}.jsonl"
            if older.exists():
                os.replace(older, self.dir / f"audit.{i + 1}.jsonl")
        os.replace(current, self.dir / "audit.1.jsonl")
        extra = self.dir / f"audit.{self.keep + 1}.jsonl"
        if extra.exists():
            extra.unlink()

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

    A torn last line (a crash mid-write) is skipped.
    """
    files = sorted(
        directory.glob("audit.*.jsonl"),
        key=lambda p: int(p.name.split(".")[1]),
        reverse=True,
    )
    files.append(directory / FILE)
    out: list[dict[str, Any]] = []
    for f in files:
        try:
            text = f.read_text(errors="replace")
        except FileNotFoundError:
            continue
        for line in text.splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict):
                out.append(entry)
    return out


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


def format_audit(entries: list[dict[str, Any]]) -> str:
    """A plain-text table of audit events (no colour codes)."""
    import datetime as _dt

    rows = [("time (UTC)", "event", "app", "researcher", "details")]
    for e in entries:
        ts = _dt.datetime.fromtimestamp(float(e.get("ts", 0)), tz=_dt.UTC)
        details = []
        if e.get("event") == "run":
            details.append(f"{e.get('message_type', '?')} {e.get('group', '')}".strip())
            details.append(f"{float(e.get('end', 0)) - float(e.get('start', 0)):.2f} s")
            details.append(str(e.get("outcome", e.get("status", ""))))
        elif e.get("event") == "refused":
            details.append(f"{e.get('status')}: {e.get('reason', '')}")
        elif e.get("event") in ("received", "replied"):
            details.append(f"{e.get('bytes', 0)} bytes")
            if e.get("status") is not None:
                details.append(f"status {e.get('status')}")
            if e.get("fingerprint"):
                details.append(f"key {str(e['fingerprint'])[:16]}")
        # Every cell is escaped: message types, group ids, reasons and names
        # come from researchers and must not drive the terminal.
        rows.append(
            (
                ts.strftime("%Y-%m-%d %H:%M:%S"),
                printable(e.get("event", "")),
                printable(e.get("app", "")),
                printable(e.get("sender", "")),
                printable(", ".join(d for d in details if d)),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [
        "  ".join(r[i].ljust(widths[i]) for i in range(4)) + "  " + r[4] for r in rows
    ]
    return "\n".join(line.rstrip() for line in lines)
