"""The handles a transport or the grid reports through, and the silent reporter.

:class:`TransferHandle` and :class:`WaitHandle` count what happened and call a
hook per change; a :class:`Reporter` hands them out and its subclasses turn the
hooks into log lines (:mod:`.log`) or a live display (:mod:`.live`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Any, Literal

__all__ = [
    "Direction",
    "NullReporter",
    "Reporter",
    "TransferHandle",
    "WaitHandle",
    "format_bytes",
]

Direction = Literal["send", "receive"]


def format_bytes(n: float) -> str:
    """``1536`` -> ``"1.5 KB"`` (decimal units, as rich shows them)."""
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"  # pragma: no cover (loop always returns)


class TransferHandle:
    """One transfer in progress; returned by :func:`transfer`.

    Call :meth:`advance` with the bytes moved since the last call and
    :meth:`done` once at the end. Calls after :meth:`done` are ignored.
    """

    def __init__(self, peer: str, direction: Direction, total_bytes: int) -> None:
        self.peer = peer
        self.direction = direction
        self.total_bytes = max(0, int(total_bytes))
        self.completed = 0
        self.started = time.monotonic()
        self.finished = False
        self._lock = threading.Lock()

    def advance(self, n: int) -> None:
        """Record ``n`` more bytes moved."""
        with self._lock:
            if self.finished:
                return
            self.completed += int(n)
        self._on_advance()

    def done(self, ok: bool = True) -> None:
        """End the transfer (``ok=False``: it failed or was abandoned)."""
        with self._lock:
            if self.finished:
                return
            self.finished = True
        self._on_done(ok)

    @property
    def seconds(self) -> float:
        """Seconds since the transfer started."""
        return time.monotonic() - self.started

    @property
    def rate(self) -> float:
        """Mean bytes per second so far."""
        return self.completed / max(self.seconds, 1e-6)

    def _on_advance(self) -> None:
        """Hook for reporters."""

    def _on_done(self, ok: bool) -> None:
        """Hook for reporters."""

    def __enter__(self) -> TransferHandle:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        self.done(ok=exc_type is None)


class WaitHandle:
    """A wait for replies; returned by :func:`wait`.

    Call :meth:`update` whenever the picture changes (who answered, who is
    still awaited) and :meth:`done` once at the end.
    """

    def __init__(self, what: str, total: int, timeout: float) -> None:
        self.what = what
        self.total = int(total)
        self.started = time.monotonic()
        self.deadline = self.started + float(timeout)
        self.answered: list[str] = []
        self.waiting: list[str] = []
        self.count = 0
        self.finished = False
        self._lock = threading.Lock()

    #: Seconds between two :meth:`update` calls the reporter wants (a live
    #: display redraws often; a log gets one "still waiting" line per 10 s).
    every: float = 10.0

    def update(
        self,
        answered: Iterable[str] = (),
        waiting: Iterable[str] = (),
        *,
        count: int | None = None,
    ) -> None:
        """The current state: who answered, who is still awaited.

        Parameters
        ----------
        answered, waiting : iterable of str
            Data owner emails.
        count : int, optional
            Replies received so far (default: ``len(answered)``; give it when
            one data owner answers several messages).
        """
        with self._lock:
            if self.finished:
                return
            self.answered = sorted(set(answered))
            self.waiting = sorted(set(waiting))
            self.count = len(self.answered) if count is None else int(count)
        self._on_update()

    def done(self) -> None:
        """End the wait (all answered, timed out or abandoned)."""
        with self._lock:
            if self.finished:
                return
            self.finished = True
        self._on_done()

    @property
    def elapsed(self) -> float:
        """Seconds since the wait started."""
        return time.monotonic() - self.started

    @property
    def time_left(self) -> float:
        """Seconds before the timeout (0 once passed)."""
        return max(0.0, self.deadline - time.monotonic())

    def _on_update(self) -> None:
        """Hook for reporters."""

    def _on_done(self) -> None:
        """Hook for reporters."""

    def __enter__(self) -> WaitHandle:
        return self

    def __exit__(self, *_: Any) -> None:
        self.done()


class Reporter:
    """Shows progress. Subclass and override :meth:`transfer` and :meth:`wait`.

    The base class reports nothing (handles only count), like
    :class:`NullReporter`.
    """

    def transfer(
        self, peer: str, direction: Direction, total_bytes: int
    ) -> TransferHandle:
        """Start showing a transfer of ``total_bytes`` to or from ``peer``."""
        return TransferHandle(peer, direction, total_bytes)

    def wait(self, what: str, total: int, timeout: float) -> WaitHandle:
        """Start showing a wait for ``total`` ``what`` (e.g. replies)."""
        return WaitHandle(what, total, timeout)

    def close(self) -> None:
        """Stop any display (called when the reporter is replaced)."""


class NullReporter(Reporter):
    """Reports nothing: for tests and applications that show their own progress."""
