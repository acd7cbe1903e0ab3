"""``Roster``: the researcher's data owners, their watches, heartbeats and readiness.

Who the data owners are (email <-> node id), whether each serves the app yet
(readiness, checked at most every 0.25 s), when each last beat (liveness) and
the reply and heartbeat watches registered on the transport. One lock guards
these fields; it is never held across a transport call (the transport's event
thread may be waiting for it).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from syft_flwr.config import Settings
from syft_flwr.errors import TransportError
from syft_flwr.ids import node_id_map, normalize_email
from syft_flwr.researcher.wakeup import Wakeup
from syft_flwr.transports.base import Watch
from syft_flwr.wire.mailbox import SyftFlwrRpc

__all__ = ["Roster"]

logger = logging.getLogger("syft_flwr.grid")

READY_RECHECK = 0.25  # seconds between two readiness checks of one data owner


class Roster:
    """The data owners of one grid and what the researcher knows about each.

    Parameters
    ----------
    rpc : SyftFlwrRpc
        The researcher's mailbox (its transport watches and checks readiness).
    app_name, endpoint : str
        Where the app's exchange lives in each datasite.
    datasites : list of str
        Data owner emails (normalized here).
    settings : callable
        Returns the settings in force (read at call time).
    wake : Wakeup
        Told when a data owner beats (and may have become ready).
    """

    def __init__(
        self,
        rpc: SyftFlwrRpc,
        app_name: str,
        endpoint: str,
        datasites: list[str],
        settings: Callable[[], Settings],
        wake: Wakeup,
    ) -> None:
        self._rpc = rpc
        self._app_name = app_name
        self._endpoint = endpoint
        self._settings = settings
        self._wake = wake
        self.datasites = [normalize_email(d) for d in datasites]
        self._node_to_email = node_id_map(self.datasites)
        self._email_to_node = {e: n for n, e in self._node_to_email.items()}
        self._lock = threading.RLock()
        self._watches: dict[str, Watch] = {}
        self._watching: set[str] = set()  # watches being registered
        self._warned_unprepared: set[str] = set()
        self._ready: set[str] = set()
        self._ready_checked: dict[str, float] = {}
        # Liveness: when each data owner's heartbeat last changed (monotonic),
        # and who was reported dead (logged once; cleared by the next beat).
        self._beats: dict[str, float] = {}
        self._dead: set[str] = set()

    # -- who ------------------------------------------------------------------
    def node_ids(self) -> list[int]:
        """Node ids of all data owners."""
        return list(self._node_to_email)

    def email_of(self, node_id: int) -> str:
        """The email of ``node_id`` (``KeyError`` if unknown)."""
        return self._node_to_email[node_id]

    def find_email(self, node_id: int) -> str | None:
        """The email of ``node_id``, or ``None`` if it is not a data owner here."""
        return self._node_to_email.get(node_id)

    def node_id_of(self, email: str) -> int:
        """The node id of ``email`` (``KeyError`` if unknown)."""
        return self._email_to_node[normalize_email(email)]

    # -- watches --------------------------------------------------------------
    def ensure_watch(
        self,
        email: str,
        on_response: Callable[[str], None],
        before: Callable[[str], None],
    ) -> None:
        """Register the reply and heartbeat watches of ``email`` once.

        ``before(email)`` runs first (the grid withdraws leftovers of earlier
        runs there). A heartbeat already on disk counts as a beat now.
        """
        # Never hold the lock across a transport call: the transport's event
        # thread may be inside a callback, waiting for this lock (deadlock).
        with self._lock:
            if email in self._watches or email in self._watching:
                return
            self._watching.add(email)
        try:
            before(email)
            w = self._rpc.watch_responses(email, self._endpoint, on_response)
            beat = self._rpc.transport.watch_heartbeat(
                email, self._app_name, self._endpoint, lambda: self.on_beat(email)
            )
        except BaseException:
            with self._lock:
                self._watching.discard(email)
            raise
        with self._lock:
            self._watches[email] = w
            self._watches[f"{email}#heartbeat"] = beat
            self._watching.discard(email)
        self._count_beat_on_disk(email)

    def _count_beat_on_disk(self, email: str) -> None:
        # A beat from before the watch existed counts as one now (one read per
        # data owner per run): a data owner that dies before its next beat is
        # then still noticed.
        try:
            if self._rpc.transport.has_heartbeat(email, self._app_name, self._endpoint):
                self.on_beat(email)
        except TransportError as exc:
            logger.debug("could not look for the heartbeat of %s: %s", email, exc)

    def cancel_watches(self) -> None:
        """Stop every watch."""
        with self._lock:
            watches = list(self._watches.values())
            self._watches.clear()
        for w in watches:
            w.cancel()

    # -- liveness -------------------------------------------------------------
    def on_beat(self, email: str) -> None:
        """A heartbeat of ``email`` changed: alive, and perhaps ready now."""
        with self._lock:
            self._beats[email] = time.monotonic()
            back = email in self._dead
            self._dead.discard(email)
            # A data owner beats once it serves the app: its deferred requests
            # can go now, not at the next readiness poll.
            maybe_ready = email not in self._ready
            if maybe_ready:
                self._ready_checked.pop(email, None)
        if maybe_ready:
            self._wake.hint()
        else:
            self._wake.notify()
        if back:
            logger.info("%s is alive again (its heartbeat is back)", email)

    def heartbeat_limit(self) -> tuple[float, float]:
        """(seconds between beats, seconds of silence after which we give up)."""
        s = self._settings()
        interval = (
            s.heartbeat_interval or self._rpc.transport.default_heartbeat_interval
        )
        return interval, interval * s.heartbeat_misses

    def silent(self) -> dict[str, float]:
        """Data owners seen beating whose heartbeat stopped -> seconds of silence.

        Only a data owner seen beating can be declared dead: one that never
        started (or runs an older syft_flwr) is waited for until the timeout.
        """
        _, limit = self.heartbeat_limit()
        now = time.monotonic()
        with self._lock:
            return {e: now - t for e, t in self._beats.items() if now - t > limit}

    def declare_dead(self, emails: set[str], silence: dict[str, float]) -> None:
        """Log (once until its next beat) each data owner that stopped answering."""
        with self._lock:
            newly = emails - self._dead
            self._dead |= newly
        for email in sorted(newly):
            logger.warning(
                "%s stopped answering: no heartbeat for %.0f s (its process may have "
                "crashed or lost its connection); going on without it",
                email,
                silence[email],
            )

    # -- readiness ------------------------------------------------------------
    def is_ready(self, email: str, *, force: bool = False) -> bool:
        """Whether ``email`` serves the app (checked at most every 0.25 s)."""
        now = time.monotonic()
        with self._lock:
            if email in self._ready:
                return True
            if not force and now - self._ready_checked.get(email, 0.0) < READY_RECHECK:
                return False
            self._ready_checked[email] = now
        try:
            ok = self._rpc.transport.is_prepared(email, self._app_name, self._endpoint)
        except TransportError as exc:  # e.g. Drive unreachable: try again later
            logger.debug("could not check whether %s is ready: %s", email, exc)
            return False
        if ok:
            with self._lock:
                self._ready.add(email)
        return ok

    def not_ready(self, email: str) -> None:
        """Forget that ``email`` was ready (e.g. its keys are not published)."""
        with self._lock:
            self._ready.discard(email)

    def first_warning(self, email: str) -> bool:
        """True the first time ``email`` is reported as not serving the app."""
        with self._lock:
            first = email not in self._warned_unprepared
            self._warned_unprepared.add(email)
        return first

    def wait_ready(self, wait: float) -> list[str]:
        """Wait up to ``wait`` s for every data owner to serve the app.

        Returns the data owners still not ready.
        """
        end = time.monotonic() + wait
        while True:
            waiting = [e for e in self.datasites if not self.is_ready(e)]
            now = time.monotonic()
            if not waiting or now >= end:
                return waiting
            for email in waiting:
                if self.first_warning(email):
                    logger.info(
                        "%s has not started serving the app; waiting up to %.0f s "
                        "before round 1",
                        email,
                        wait,
                    )
            self._wake.wait(lambda: False, timeout=min(0.25, end - now))
