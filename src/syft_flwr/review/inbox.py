"""The review inbox quota: how many projects of one researcher may wait for review.

Without it any user could fill a data owner's review store (and its disk) with
signed packages, and make every ``syft_flwr projects`` decrypt and check all of
them. The count is per sender folder, taken before a submission is read.
"""

from __future__ import annotations

import logging

from syft_flwr._email import fold_domain
from syft_flwr.review.package import printable
from syft_flwr.review.store import ProjectStore
from syft_flwr.transports.base import RpcPath

__all__ = ["MAX_PENDING_PER_RESEARCHER", "InboxQuota"]

logger = logging.getLogger("syft_flwr.review")

#: Projects of one researcher that may wait for review at once.
MAX_PENDING_PER_RESEARCHER = 20


class InboxQuota:
    """At most ``limit`` projects per researcher waiting for review (reads included).

    Counted per sender folder *before* anything of a submission is read, so a
    researcher who floods the inbox costs the data owner no decryption, parsing
    or storage beyond its limit, and other researchers' submissions are still
    read. Submissions over the limit stay in the inbox, unread, until the data
    owner decides some of that researcher's projects.
    """

    def __init__(self, store: ProjectStore, limit: int) -> None:
        self.store = store
        self.limit = limit
        self.used: dict[str, int] = {}
        self.skipped: dict[str, int] = {}

    def admit(self, key: str) -> bool:
        """Whether to read the submission at ``key`` (counted if so)."""
        path = RpcPath.parse(key)
        sender = fold_domain(path.peer) if path is not None else ""
        if sender not in self.used:
            self.used[sender] = self.store.pending_count(sender)
        if self.used[sender] >= self.limit:
            self.skipped[sender] = self.skipped.get(sender, 0) + 1
            return False
        self.used[sender] += 1
        return True

    def report(self) -> None:
        """Log, once per researcher, how many submissions were left unread."""
        for sender, n in sorted(self.skipped.items()):
            logger.warning(
                "did not read %d more submission(s) from %s, who already has %d "
                "project(s) waiting for your review (the limit per researcher is %d); "
                "they are read once you approve or reject some",
                n,
                printable(sender)[:200],
                self.store.pending_count(sender),
                self.limit,
            )
