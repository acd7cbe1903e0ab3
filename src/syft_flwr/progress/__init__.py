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

The handles and the silent reporter are in :mod:`.handles`, the log lines in
:mod:`.log`, the live display in :mod:`.live`; this module picks the reporter
and is the face everyone calls.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator
from typing import Any

from syft_flwr.progress.handles import Direction as Direction
from syft_flwr.progress.handles import NullReporter as NullReporter
from syft_flwr.progress.handles import Reporter as Reporter
from syft_flwr.progress.handles import TransferHandle as TransferHandle
from syft_flwr.progress.handles import WaitHandle as WaitHandle
from syft_flwr.progress.handles import format_bytes as format_bytes
from syft_flwr.progress.live import RichReporter as RichReporter
from syft_flwr.progress.log import LogReporter as LogReporter

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
