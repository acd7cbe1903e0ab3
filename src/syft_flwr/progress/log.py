"""Progress as plain log lines on the ``syft_flwr.progress`` logger (no terminal)."""

from __future__ import annotations

import logging
import time
from typing import Any

from syft_flwr.progress.handles import (
    Direction,
    Reporter,
    TransferHandle,
    WaitHandle,
    format_bytes,
)

__all__ = ["LogReporter"]

logger = logging.getLogger("syft_flwr.progress")


class _LogTransfer(TransferHandle):
    def __init__(self, reporter: LogReporter, *args: Any) -> None:
        super().__init__(*args)
        self._reporter = reporter
        self._next_line = self.started + reporter.every
        self._shown = self.total_bytes >= reporter.min_bytes
        if self._shown:
            logger.info(
                "%s %s %s %s",
                "sending" if self.direction == "send" else "receiving",
                format_bytes(self.total_bytes),
                "to" if self.direction == "send" else "from",
                self.peer,
            )

    def _words(self) -> tuple[str, str]:
        if self.direction == "send":
            return "sent", "to"
        return "received", "from"

    def _on_advance(self) -> None:
        now = time.monotonic()
        if not self._shown or now < self._next_line:
            return
        self._next_line = now + self._reporter.every
        verb, prep = self._words()
        pct = 100.0 * self.completed / self.total_bytes if self.total_bytes else 100.0
        logger.info(
            "%s %s of %s (%.0f%%) %s %s at %s/s",
            verb,
            format_bytes(self.completed),
            format_bytes(self.total_bytes),
            pct,
            prep,
            self.peer,
            format_bytes(self.rate),
        )

    def _on_done(self, ok: bool) -> None:
        if not self._shown:
            return
        verb, prep = self._words()
        if ok:
            logger.info(
                "%s %s %s %s in %.1f s (%s/s)",
                verb,
                format_bytes(self.completed),
                prep,
                self.peer,
                self.seconds,
                format_bytes(self.rate),
            )
        else:
            logger.warning(
                "transfer %s %s stopped after %s of %s",
                prep,
                self.peer,
                format_bytes(self.completed),
                format_bytes(self.total_bytes),
            )


class _LogWait(WaitHandle):
    def __init__(self, reporter: LogReporter, *args: Any) -> None:
        super().__init__(*args)
        self.every = reporter.every

    def _on_update(self) -> None:
        logger.info(
            "%d/%d %s after %.0f s; waiting for %s (%.0f s left)",
            self.count,
            self.total,
            self.what,
            self.elapsed,
            ", ".join(self.waiting) or "nobody",
            self.time_left,
        )


class LogReporter(Reporter):
    """Plain log lines on the ``syft_flwr.progress`` logger, one per event.

    Parameters
    ----------
    every : float
        Seconds between two "still going" lines of one transfer or wait.
    min_bytes : int
        Transfers smaller than this are not logged (each message would
        otherwise add two lines).
    """

    def __init__(self, every: float = 10.0, min_bytes: int = 1_000_000) -> None:
        self.every = every
        self.min_bytes = min_bytes

    def transfer(
        self, peer: str, direction: Direction, total_bytes: int
    ) -> TransferHandle:
        return _LogTransfer(self, peer, direction, total_bytes)

    def wait(self, what: str, total: int, timeout: float) -> WaitHandle:
        return _LogWait(self, what, total, timeout)
