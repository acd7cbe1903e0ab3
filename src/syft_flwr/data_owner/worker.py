"""The handler worker: runs a data owner's handler off the request loop's thread.

One long-lived daemon thread runs handlers one at a time, each under its
request's deadline, with the request it serves visible to the handler through
:func:`current_request` (a contextvar set on the worker thread for the call).
The loop keeps its own thread free to honour a stop, and answers 504 when a
handler overruns.
"""

from __future__ import annotations

import contextvars
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from syft_flwr.data_owner.protocol import MessageHandler

if TYPE_CHECKING:
    from syft_flwr.data_owner.ledger import Ledger

__all__ = ["HandlerWorker", "ReplyAlias", "RequestInfo", "current_request"]

logger = logging.getLogger("syft_flwr.events")

#: The 504 body of a request whose handler overran its deadline.
OVERRAN = (
    b"the ClientApp did not finish before the request expired (a contained "
    b"ClientApp is stopped at the deadline; details in the data owner's log)"
)


class ReplyAlias:
    """A handler's :meth:`RequestInfo.keep_reply_as` request, until the reply is taken.

    Shared by the worker thread (the handler asks) and the loop thread (which
    takes the answer once the handler returned, or gave up on it): its lock
    makes "asked after it was taken" a clear False for the handler.
    """

    __slots__ = ("alias", "closed", "lock")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.alias: str | None = None
        self.closed = False

    def close(self) -> str | None:
        """Take the alias asked for (if any); later asks are refused."""
        with self.lock:
            self.closed = True
            return self.alias


@dataclass(frozen=True)
class RequestInfo:
    """What a handler may want to know about the request it is serving."""

    id: str
    sender: str
    endpoint: str
    created: str
    expires: str
    headers: dict[str, str]
    encrypted: bool
    #: What the handler ran (message type, round group, run id...), for the
    #: data owner's audit trail; a handler may add names, never private values.
    audit: dict[str, object] = field(default_factory=dict)
    #: The request's expiry, POSIX time: a contained ClientApp is killed then.
    expires_at: float | None = None
    #: Where this request's reply is kept (see :meth:`keep_reply_as`).
    ledger: Ledger | None = field(default=None, repr=False, compare=False)
    _keep: ReplyAlias | None = field(default=None, repr=False, compare=False)

    def keep_reply_as(self, alias: str) -> bool:
        """Ask for this request's reply to be findable under ``alias`` too.

        The reply is stored once, in :attr:`ledger`, when the handler returns
        (and before it is sent); ``ledger.alias_reply(alias)`` then finds it.
        A reply cache uses this instead of writing a second copy. Returns False
        when the reply is no longer the handler's to give (it overran its
        deadline, or there is no ledger): the caller keeps it itself.
        """
        keep = self._keep
        if keep is None:
            return False
        with keep.lock:
            if keep.closed:
                return False
            keep.alias = alias
            return True


_current: contextvars.ContextVar[RequestInfo | None] = contextvars.ContextVar(
    "syft_flwr_current_request", default=None
)


def current_request() -> RequestInfo | None:
    """Return the request being served by the current handler call, if any."""
    return _current.get()


class HandlerWorker:
    """One long-lived daemon thread that runs handlers, one at a time.

    Handlers run off the loop thread so the loop can stop and enforce deadlines
    while a ClientApp runs; one thread for all calls (not one per call) keeps
    the hand-off cheap. A handler that never returns keeps the thread: later
    jobs queue behind it, so the ClientApp is never called twice at once.

    Parameters
    ----------
    stop:
        Set when the loop stops: a wait for a handler gives up at once.
    clock:
        POSIX time source, the one request expiries are compared with.
    """

    def __init__(self, stop: threading.Event, clock: Callable[[], float]) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], None], threading.Event]] = (
            queue.SimpleQueue()
        )
        self._idle = threading.Event()
        self._idle.set()
        self._pending = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = stop
        self._clock = clock

    def submit(self, fn: Callable[[], None]) -> threading.Event:
        """Queue ``fn``; the returned event is set when it has returned."""
        done = threading.Event()
        with self._lock:
            self._pending += 1
            self._idle.clear()
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="syft_flwr-handler", daemon=True
                )
                self._thread.start()
        self._jobs.put((fn, done))
        return done

    def wait_idle(self, timeout: float) -> bool:
        """True once no handler is queued or running."""
        return self._idle.wait(timeout)

    def wait_until_free(self, expires_at: float) -> bool:
        """Wait for a handler that overran its deadline; False if we must give up."""
        while not self.wait_idle(0.1):
            if self._stop.is_set() or self._clock() >= expires_at:
                return False
        return True

    def call(
        self,
        handler: MessageHandler,
        info: RequestInfo,
        body: bytes,
        expires_at: float,
    ) -> tuple[int, bytes] | None:
        """Call ``handler`` on the worker thread, never past ``expires_at``.

        Returns ``(status, body)``, or ``None`` when the loop is stopping (the
        stop signal and Ctrl-C are honoured while a ClientApp runs). A handler
        that overruns gets a 504 reply at the deadline; it keeps running in the
        background (Python cannot kill a thread) and the next request waits for
        it, so the ClientApp is never called twice at once.
        """
        box: dict[str, object] = {}

        def work() -> None:
            token = _current.set(info)
            try:
                box["result"] = handler(body)
            except BaseException as exc:  # noqa: BLE001 - reported as a 500 below
                box["error"] = exc
                logger.exception(
                    "handler for %s raised on request %s", info.endpoint, info.id
                )
            finally:
                _current.reset(token)

        ended = self._await(self.submit(work), info.id, expires_at)
        if ended == "stopped":
            return None
        if ended == "expired":
            return 504, OVERRAN
        return _as_reply(box)

    def _await(self, done: threading.Event, mid: str, expires_at: float) -> str:
        """How the wait ended: ``"returned"``, ``"stopped"`` or ``"expired"``."""
        while not done.wait(timeout=0.1):
            if self._stop.is_set():
                logger.warning(
                    "stopping while the ClientApp still runs request %s; it gets "
                    "no reply and is not run again",
                    mid,
                )
                return "stopped"
            if self._clock() >= expires_at:
                logger.error(
                    "the ClientApp did not finish request %s before it expired; "
                    "the researcher is told so",
                    mid,
                )
                return "expired"
        return "returned"

    def _run(self) -> None:
        while True:
            fn, done = self._jobs.get()
            try:
                fn()
            finally:
                done.set()
                with self._lock:
                    self._pending -= 1
                    if self._pending == 0:
                        self._idle.set()


def _as_reply(box: dict[str, object]) -> tuple[int, bytes]:
    """The reply a handler's outcome makes: 500 for an exception, else 200."""
    if "error" in box:
        exc = box["error"]
        return 500, f"{type(exc).__name__}: {exc}".encode()
    result = box.get("result")
    if isinstance(result, str):
        return 200, result.encode("utf-8")
    if result is None:
        return 200, b""
    # bytes (a FramedBody included, whose parts bytes() would drop) as is.
    if isinstance(result, bytes):
        return 200, result
    if isinstance(result, bytearray | memoryview):
        return 200, bytes(result)
    raise TypeError(f"a ClientApp handler returned {type(result).__name__}")
