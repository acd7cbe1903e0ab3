"""``WaitTimers``: the timers of the grid's reply loop, in one place.

The loop that waits for replies has five reasons to wake up: the call's
deadline, the next "still waiting" line, the next full rescan (catches what
file events missed), the retry of deferred requests and the heartbeat check.
This object owns the first three and says how long the loop may sleep.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["WaitTimers"]


class WaitTimers:
    """Deadline, progress and rescan times of one ``send_and_receive`` call.

    Parameters
    ----------
    wait_s : float
        Seconds the call waits for replies in all.
    rescan : float
        Seconds between full passes over every pending reply.
    progress_every : float
        Seconds between progress reports.
    beat_every : float
        Seconds between data owners' heartbeats (the silence check runs as often).
    clock : callable, optional
        Monotonic clock (``time.monotonic``).
    """

    def __init__(
        self,
        wait_s: float,
        rescan: float,
        progress_every: float,
        beat_every: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self.rescan = rescan
        self._progress_every = progress_every
        self._beat_every = beat_every
        self.start = clock()
        self.deadline = self.start + wait_s
        self._next_progress = self.start + progress_every
        self._next_full = self.start  # the first pass reads everything

    def now(self) -> float:
        """The loop's clock."""
        return self._clock()

    def elapsed(self) -> float:
        """Seconds since the call started waiting."""
        return self._clock() - self.start

    def full_pass_due(self, now: float) -> bool:
        """Whether this pass reads everything (then the next one is scheduled)."""
        if now < self._next_full:
            return False
        self._next_full = now + self.rescan
        return True

    def expired(self, now: float) -> bool:
        """Whether the call's deadline has passed."""
        return now >= self.deadline

    def progress_due(self, now: float) -> bool:
        """Whether a progress report is due (then the next one is scheduled)."""
        if now < self._next_progress:
            return False
        self._next_progress = now + self._progress_every
        return True

    def sleep_for(self, now: float, step: float) -> float:
        """How long the loop may sleep: until the first timer is due, or ``step``."""
        return max(
            0.0,
            min(
                self.deadline - now,
                step,
                self._next_progress - now,
                self._next_full - now,
                self._beat_every,
            ),
        )
