"""``WorkTally`` and the reply loop's reports: what became of the work sent.

Counts requests sent and replies that succeeded or failed (system messages
excluded), and says in the log and the progress reporter who answered.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import ClassVar

from flwr.app import Message

from syft_flwr import progress
from syft_flwr._flwr_compat import SYSTEM_MESSAGE_TYPE

__all__ = ["OUT_OF_BUDGET", "WorkTally", "log_summary", "report_progress"]

logger = logging.getLogger("syft_flwr.grid")

#: Words every out-of-budget error reply of a data owner carries (see
#: ``syft_flwr.data_owner.privacy.guard.OUT_OF_BUDGET``).
OUT_OF_BUDGET = "out of privacy budget"


@dataclass
class WorkTally:
    """What became of the ClientApp work this grid sent (system messages excluded).

    ``sent`` requests went out; ``succeeded`` got a reply without error;
    ``failed`` got an error reply (a raised ClientApp, a refusal, an unreadable
    reply). Requests never answered count in neither. ``out_of_budget`` maps
    the node id of each site that refused for its privacy budget to its latest
    refusal (how much is spent and left), for the end-of-run summary.
    """

    sent: int = 0
    succeeded: int = 0
    failed: int = 0
    # One lock for every tally (counting is rare and short): a tally stays a
    # plain record that copies, pickles and ``asdict()``s as it did before.
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __post_init__(self) -> None:
        # Not a field: the record's fields, repr and asdict() stay as they were.
        self.out_of_budget: dict[int, str] = {}

    @property
    def all_failed(self) -> bool:
        """True when work was sent and not one ClientApp call succeeded."""
        return self.sent > 0 and self.succeeded == 0

    def count_sent(self, msg: Message) -> None:
        """Count ``msg`` as sent work unless it is a system message."""
        if msg.metadata.message_type != SYSTEM_MESSAGE_TYPE:
            with self._lock:
                self.sent += 1

    def count(self, replies: Iterable[Message]) -> None:
        """Count each reply (system messages excluded) as succeeded or failed."""
        with self._lock:
            for r in replies:
                if r.metadata.message_type == SYSTEM_MESSAGE_TYPE:
                    continue
                if r.has_error():
                    self.failed += 1
                    reason = r.error.reason or ""
                    if OUT_OF_BUDGET in reason:
                        self.out_of_budget[r.metadata.src_node_id] = reason
                else:
                    self.succeeded += 1


def report_progress(
    shown: progress.WaitHandle,
    total: int,
    left: int,
    waiting: set[str],
    replies: list[Message],
    email_of: Callable[[int], str | None],
) -> None:
    """Tell the progress reporter who answered and who is still awaited."""
    answered = {email_of(r.metadata.src_node_id) for r in replies}
    shown.update(
        answered=sorted(e for e in answered if e),
        waiting=waiting,
        count=total - left,
    )


def log_summary(
    replies: list[Message],
    total: int,
    seconds: float,
    given_up: int,
    email_of: Callable[[int], str | None],
) -> None:
    """Log how many replies came, from whom, with how many errors."""
    answered = sorted({email_of(r.metadata.src_node_id) or "?" for r in replies})
    failed = sum(1 for r in replies if r.has_error())
    for r in replies:
        # Sites that enforce a privacy budget refuse once it is spent: say who,
        # in words (the strategy goes on with the others, as min_*_nodes allow).
        if r.has_error() and OUT_OF_BUDGET in (r.error.reason or ""):
            logger.warning(
                "%s is out of privacy budget: %s",
                email_of(r.metadata.src_node_id) or "a data owner",
                r.error.reason,
            )
    logger.info(
        "%d/%d replies in %.1f s from %s%s%s",
        len(replies),
        total,
        seconds,
        ", ".join(answered) or "nobody",
        f" ({failed} errors)" if failed else "",
        f" (gave up on {given_up}: no heartbeat)" if given_up else "",
    )
