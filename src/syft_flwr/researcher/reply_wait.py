"""``ReplyWait``: one ``send_and_receive`` call waiting for its replies.

Owns what the call is waiting for (the requests still unanswered, the replies
collected, the requests given up on) and its timers; reads replies through the
grid and sleeps on the grid's :class:`~syft_flwr.researcher.wakeup.Wakeup`
between passes. Only the researcher's thread touches it (no lock).
"""

from __future__ import annotations

from collections.abc import Callable

from flwr.app import Message

from syft_flwr import progress
from syft_flwr.researcher.deadline import WaitTimers
from syft_flwr.researcher.inbox import Inbox
from syft_flwr.researcher.outbox import Outbox
from syft_flwr.researcher.roster import Roster
from syft_flwr.researcher.tally import report_progress
from syft_flwr.researcher.wakeup import Wakeup

__all__ = ["ReplyWait"]

DEFERRED_RETRY = 0.25  # seconds between retries of requests not written yet

#: Reads replies: (message ids, full pass?, look for rejection markers?).
Pull = Callable[[list[str], bool, bool], list[Message]]


class ReplyWait:
    """Collect the replies of ``ids`` until none remains or the deadline passes.

    Parameters
    ----------
    ids : list of str
        The requests pushed by the call.
    timers : WaitTimers
        The call's deadline, progress and rescan times.
    shown : progress.WaitHandle
        Where progress is reported.
    pull : callable
        Reads replies (the grid's ``_pull``).
    give_up : callable
        Withdraws the requests among those given to data owners whose heartbeat
        stopped; returns them.
    inbox, outbox, roster, wake
        The grid's owners of state this wait reads.
    """

    def __init__(
        self,
        ids: list[str],
        timers: WaitTimers,
        shown: progress.WaitHandle,
        *,
        pull: Pull,
        give_up: Callable[[set[str]], set[str]],
        inbox: Inbox,
        outbox: Outbox,
        roster: Roster,
        wake: Wakeup,
    ) -> None:
        self.ids = ids
        self.remaining = set(ids)
        self.replies: list[Message] = []
        self.given_up: set[str] = set()
        self._timers = timers
        self._shown = shown
        self._pull = pull
        self._give_up = give_up
        self._inbox = inbox
        self._outbox = outbox
        self._roster = roster
        self._wake = wake

    def run(self) -> None:
        """Wait; afterwards ``remaining`` holds the requests never answered."""
        timers = self._timers
        first = True
        while self.remaining:
            full = timers.full_pass_due(timers.now())
            # The first pass comes right after the requests were written: no sync
            # client has refused them yet, so no rejection marker is looked for
            # (a folder listing per data owner). Every later full pass looks.
            self._collect(full, check_rejected=full and not first)
            first = False
            now = timers.now()
            if not self.remaining or timers.expired(now):
                break
            if timers.progress_due(now):
                self._report()
            # File events wake us; deferred requests are retried often; a full
            # pass every poll interval catches anything events missed.
            step = DEFERRED_RETRY if self._outbox.has_unsent() else timers.rescan
            self._wake.wait(
                lambda: self._inbox.has_arrived(self.remaining),
                timeout=timers.sleep_for(now, step),
            )

    def _collect(self, full: bool, *, check_rejected: bool) -> None:
        """One pass: take the replies there, let go of the silent data owners."""
        for reply in self._pull(list(self.remaining), full, check_rejected):
            self.remaining.discard(reply.metadata.reply_to_message_id)
            self.replies.append(reply)
        gone = self._give_up(self.remaining)
        self.given_up |= gone
        self.remaining.difference_update(gone)

    def _report(self) -> None:
        report_progress(
            self._shown,
            len(self.ids),
            len(self.remaining),
            self._inbox.emails_of(self.remaining),
            self.replies,
            self._roster.find_email,
        )
