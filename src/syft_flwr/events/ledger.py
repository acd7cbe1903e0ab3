"""Durable record of executed request ids (replay protection across restarts)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

__all__ = ["Ledger"]


class Ledger:
    """An append-only set of request ids, kept in ``<state_dir>/executed.log``.

    With ``state_dir=None`` it lives in memory only (tests, notebooks).
    """

    FILE = "executed.log"

    def __init__(self, state_dir: Path | None) -> None:
        self._lock = threading.Lock()
        self._ids: set[str] = set()
        self.path = None if state_dir is None else Path(state_dir) / self.FILE
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            if self.path.exists():
                # A torn last line (crash mid-write) is just ignored.
                for line in self.path.read_text(errors="replace").splitlines():
                    if line.strip():
                        self._ids.add(line.strip())

    def __contains__(self, mid: object) -> bool:
        with self._lock:
            return mid in self._ids

    def __len__(self) -> int:
        with self._lock:
            return len(self._ids)

    def add(self, mid: str) -> None:
        """Record ``mid``; durable (fsync) before returning."""
        with self._lock:
            if mid in self._ids:
                return
            self._ids.add(mid)
            if self.path is not None:
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    os.write(fd, (mid + "\n").encode())
                    os.fsync(fd)
                finally:
                    os.close(fd)
