"""Progress as a live rich display on a terminal, log lines routed around it."""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any

from rich.progress import ProgressColumn

from syft_flwr.progress.handles import (
    Direction,
    Reporter,
    TransferHandle,
    WaitHandle,
    format_bytes,
)

__all__ = ["RichReporter"]


class RichReporter(Reporter):
    """A live rich display on a terminal: one line per transfer or wait.

    Transfers show bytes, rate and time left; waits show how many answered,
    who is still awaited and the time left before the timeout. The display
    appears with the first line and goes away when the last one is done.

    Parameters
    ----------
    console : rich.console.Console, optional
        Where to draw (default: stderr).
    """

    def __init__(self, console: Any = None) -> None:
        from rich.console import Console

        self.console = console if console is not None else Console(stderr=True)
        self._lock = threading.Lock()
        self._progress: Any = None
        self._tasks = 0
        self._handlers: list[tuple[logging.StreamHandler[Any], Any]] = []

    def _route_logs(self, streams: dict[int, Any]) -> None:
        """Send log handlers writing to the terminal through the live display.

        Rich redirects ``sys.stdout``/``sys.stderr`` while it draws, but a
        logging handler keeps the stream it was created with; its lines would
        land in the middle of the progress line. ``streams`` maps ``id()`` of
        each original stream to rich's proxy for it.
        """
        loggers = [logging.getLogger()] + [
            lg
            for lg in list(logging.Logger.manager.loggerDict.values())
            if isinstance(lg, logging.Logger)
        ]
        handlers = {id(h): h for lg in loggers for h in lg.handlers}  # once each
        for h in handlers.values():
            if isinstance(h, logging.StreamHandler):
                proxy = streams.get(id(h.stream))
                if proxy is not None:
                    self._handlers.append((h, h.setStream(proxy)))

    def _restore_logs(self) -> None:
        for handler, stream in reversed(self._handlers):
            handler.setStream(stream)
        self._handlers.clear()

    def _stop(self) -> None:
        """Stop the display and give the log handlers their streams back."""
        self._progress.stop()
        self._progress = None
        self._tasks = 0
        self._restore_logs()

    def _start_task(self, description: str, total: float, **fields: Any) -> int:
        from rich.progress import BarColumn, Progress, TextColumn

        with self._lock:
            if self._progress is None:
                self._progress = Progress(
                    TextColumn("{task.description}"),
                    BarColumn(bar_width=24),
                    _DetailColumn(),
                    console=self.console,
                    transient=True,
                    refresh_per_second=4,
                )
                before = (sys.stdout, sys.stderr)
                self._progress.start()
                after = (sys.stdout, sys.stderr)
                self._route_logs(
                    {id(b): a for b, a in zip(before, after, strict=True) if a is not b}
                )
            self._tasks += 1
            return int(self._progress.add_task(description, total=total, **fields))

    def _end_task(self, task_id: int) -> None:
        with self._lock:
            if self._progress is None:
                return
            self._progress.remove_task(task_id)
            self._tasks -= 1
            if self._tasks <= 0:
                self._stop()

    def _call(self, method: str, *args: Any, **kwargs: Any) -> None:
        with self._lock:
            if self._progress is not None:
                getattr(self._progress, method)(*args, **kwargs)

    def transfer(
        self, peer: str, direction: Direction, total_bytes: int
    ) -> TransferHandle:
        arrow = "→" if direction == "send" else "←"
        handle = _RichTransfer(peer, direction, total_bytes)
        handle.reporter = self
        handle.task_id = self._start_task(
            f"{arrow} {peer}", max(1, total_bytes), kind="transfer", handle=handle
        )
        return handle

    def wait(self, what: str, total: int, timeout: float) -> WaitHandle:
        handle = _RichWait(what, total, timeout)
        handle.reporter = self
        handle.task_id = self._start_task(
            f"waiting for {what}", max(1, total), kind="wait", handle=handle
        )
        return handle

    def close(self) -> None:
        with self._lock:
            if self._progress is not None:
                self._stop()


class _RichTransfer(TransferHandle):
    reporter: RichReporter
    task_id: int

    def _on_advance(self) -> None:
        self.reporter._call("update", self.task_id, completed=self.completed)

    def _on_done(self, ok: bool) -> None:
        self.reporter._end_task(self.task_id)


class _RichWait(WaitHandle):
    reporter: RichReporter
    task_id: int
    every = 0.5  # a live display: who answered shows up within half a second

    def _on_update(self) -> None:
        self.reporter._call("update", self.task_id, completed=self.count)

    def _on_done(self) -> None:
        self.reporter._end_task(self.task_id)


class _DetailColumn(ProgressColumn):
    """Bytes, rate and time left (transfers) or who answered and time left (waits)."""

    def render(self, task: Any) -> Any:
        from rich.text import Text

        handle = task.fields.get("handle")
        if task.fields.get("kind") == "transfer" and handle is not None:
            left = task.time_remaining
            eta = "?" if left is None else _clock(left)
            return Text(
                f"{format_bytes(task.completed)}/{format_bytes(handle.total_bytes)}"
                f"  {format_bytes(task.speed or 0)}/s  {eta} left"
            )
        if handle is not None:
            waiting = ", ".join(handle.waiting) or "-"
            return Text(
                f"{handle.count}/{handle.total} answered  waiting: {waiting}  "
                f"{_clock(handle.time_left)} before timeout"
            )
        return Text("")


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 60}:{s % 60:02d}"
