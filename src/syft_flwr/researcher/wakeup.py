"""``Wakeup``: how the grid's threads tell its waiting loops that something changed.

The grid's owners of state (inbox, roster) each keep their own lock; the loops
that wait on them (replies, readiness, stop acknowledgements) sleep on this one
condition instead. An owner changes its fields under its own lock, releases
it, then calls :meth:`Wakeup.notify` or :meth:`Wakeup.hint`: the lock order is
always this condition first, an owner's lock second (inside a predicate), so
the two never deadlock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

__all__ = ["Wakeup"]


class Wakeup:
    """A condition to sleep on, with a sticky "a data owner may be ready now" hint."""

    def __init__(self) -> None:
        self._cv = threading.Condition(threading.RLock())
        # A beat from a data owner with deferred requests: it may be ready now.
        self._hint = False

    def notify(self) -> None:
        """Wake every waiter so it re-checks what it waits for."""
        with self._cv:
            self._cv.notify_all()

    def hint(self) -> None:
        """Say a data owner may have become ready, and wake every waiter."""
        with self._cv:
            self._hint = True
            self._cv.notify_all()

    def wait(
        self,
        until: Callable[[], bool],
        timeout: float,
        *,
        on_hint: bool = True,
    ) -> None:
        """Sleep until ``until()`` holds (or, with ``on_hint``, a hint came) or ``timeout``.

        With ``on_hint`` the hint is consumed on return; without it the hint is
        left for the next waiter that asks for it.
        """
        with self._cv:
            if on_hint:
                self._cv.wait_for(lambda: until() or self._hint, timeout=timeout)
                self._hint = False
            else:
                self._cv.wait_for(until, timeout=timeout)
