"""Progress where people wait: transfers to and from data owners, and replies.

The library reports through two calls and never prints directly::

    from syft_flwr import progress

    # a message (or chunked file) crossing SyftBox or Google Drive
    handle = progress.transfer("do1@example.org", "send", total_bytes=len(blob))
    for chunk in chunks:
        write(chunk)
        handle.advance(len(chunk))
    handle.done()             # or handle.done(ok=False) when it failed

    # the researcher waiting for replies
    waiting = progress.wait("replies", total=3, timeout=120.0)
    waiting.update(answered=["do1@example.org"], waiting=["do2@example.org"])
    waiting.done()

Both handles are also context managers (``done`` on exit, ``ok=False`` when the
block raised). Whoever shows the progress is a :class:`Reporter`; the default
one is picked on first use:

* on a terminal (stderr is a tty and ``NO_COLOR`` is not set): a live rich
  display with bytes, rate and time left per data owner, and for waits who
  answered and the time left before the timeout;
* otherwise (a pipe, a log file, CI, ``NO_COLOR``): plain log lines on the
  ``syft_flwr.progress`` logger, one per event (start and end of a transfer
  with its size and rate, at most one "still going" line per 10 s), never an
  escape code.

Tests and embedding applications choose with :func:`set_reporter` (e.g.
:class:`NullReporter`) or :func:`use_reporter`. Every function and handle is
thread-safe: transports may report from their own threads.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any, Literal

from rich.progress import ProgressColumn

__all__ = [
    "LogReporter",
    "NullReporter",
    "Reporter",
    "RichReporter",
    "TransferHandle",
    "WaitHandle",
    "default_reporter",
    "get_reporter",
    "set_reporter",
    "transfer",
    "use_reporter",
    "wait",
]

logger = logging.getLogger("syft_flwr.progress")

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


_lock = threading.Lock()
_reporter: Reporter | None = None


def default_reporter(stream: Any = None) -> Reporter:
    """The reporter for ``stream`` (default stderr): rich on a terminal, else logs.

    A terminal with ``NO_COLOR`` set, a pipe or a file gets :class:`LogReporter`.
    """
    from syft_flwr._logs import use_color

    s = stream if stream is not None else sys.stderr
    if use_color(s):
        from rich.console import Console

        return RichReporter(Console(file=s))
    return LogReporter()


def get_reporter() -> Reporter:
    """The reporter in use (the :func:`default_reporter` until one is set)."""
    global _reporter
    with _lock:
        if _reporter is None:
            _reporter = default_reporter()
        return _reporter


def set_reporter(reporter: Reporter | None) -> Reporter | None:
    """Use ``reporter`` from now on (None: back to the default, chosen anew).

    Returns
    -------
    Reporter or None
        The one replaced (closed first), so a caller can restore it.
    """
    global _reporter
    with _lock:
        previous, _reporter = _reporter, reporter
    if previous is not None and previous is not reporter:
        previous.close()
    return previous


@contextlib.contextmanager
def use_reporter(reporter: Reporter) -> Iterator[Reporter]:
    """Use ``reporter`` inside the block, then restore the one before."""
    global _reporter
    with _lock:
        previous, _reporter = _reporter, reporter
    try:
        yield reporter
    finally:
        with _lock:
            _reporter = previous
        reporter.close()


def transfer(peer: str, direction: Direction, total_bytes: int) -> TransferHandle:
    """Report a transfer of ``total_bytes`` to (``"send"``) or from a peer.

    Parameters
    ----------
    peer : str
        The other side's email (a data owner, or the researcher).
    direction : {"send", "receive"}
    total_bytes : int
        Size of what crosses, as far as known (0 if unknown).

    Returns
    -------
    TransferHandle
        Call ``advance(n)`` per chunk and ``done()`` (``done(ok=False)`` on
        failure) once; or use it as a context manager.
    """
    if direction not in ("send", "receive"):
        raise ValueError(f"direction must be 'send' or 'receive', not {direction!r}")
    return get_reporter().transfer(peer, direction, total_bytes)


def wait(what: str, total: int, timeout: float) -> WaitHandle:
    """Report a wait for ``total`` ``what`` (e.g. ``"replies"``), up to ``timeout`` s.

    Returns
    -------
    WaitHandle
        Call ``update(answered=..., waiting=...)`` when it changes (the handle's
        ``every`` says how often the reporter wants it) and ``done()`` once.
    """
    return get_reporter().wait(what, total, timeout)
