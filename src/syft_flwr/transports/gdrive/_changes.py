"""The changes feed: one ``changes.list`` per poll covers every channel.

The page token is taken at the first start (before anything is listed) and
saved with the index after every poll that moves it, so a restart resumes the
feed where it stopped. Polls are shared: the poller thread (while watches
exist) and reads that miss the index go through :meth:`ChangesFeed.sync`, which skips the
call when a poll started within ``max_age`` seconds already covered the caller.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from syft_flwr.errors import MessageNotFound, RemoteServiceError
from syft_flwr.transports.base import HEARTBEAT_NAME, KeyCallback, Watch
from syft_flwr.transports.gdrive._api import CHANGE_FIELDS, DriveApi
from syft_flwr.transports.gdrive._catalog import Catalog
from syft_flwr.transports.gdrive._folders import Folders
from syft_flwr.transports.gdrive._layout import FOLDER_MIME, _Entry
from syft_flwr.transports.gdrive._listing import ChannelLister, entry_for
from syft_flwr.transports.gdrive._state import Bookmarks

__all__ = ["ChangesFeed"]

_FAST_POLL = 0.25  # seconds between polls right after activity

logger = logging.getLogger("syft_flwr.transports.gdrive")


class ChangesFeed:
    """Watches served by one poller thread, fed by ``changes.list``.

    Owns the watches, what was already reported to them, the poll pacing and
    the poller thread; what the feed says goes into the catalog.
    """

    def __init__(
        self,
        identity: str,
        api: DriveApi,
        catalog: Catalog,
        bookmarks: Bookmarks,
        folders: Folders,
        lister: ChannelLister,
        *,
        clock: Callable[[], float],
        poll_interval: float,
        reconcile_interval: float,
    ) -> None:
        self.identity = identity
        self._api = api
        self._catalog = catalog
        self._bookmarks = bookmarks
        self._folders = folders
        self._lister = lister
        self._clock = clock
        self._poll_interval = poll_interval
        self._fast_poll = min(_FAST_POLL, poll_interval)
        self._reconcile_interval = reconcile_interval
        self._lock = threading.RLock()  # guards the fields below; never over I/O
        self._watches: list[Watch] = []
        self._notified: dict[tuple[str, str], tuple[str, str, str | None]] = {}
        self._baseline: dict[tuple[str, str], tuple[str, str, str | None]] = {}
        self._baseline_taken = False
        self._to_fire: list[str] = []  # keys noticed, callbacks not yet run
        self._asked: dict[str, float] = {}  # question -> when last asked
        self._poll_lock = threading.RLock()  # one feed poll at a time
        self._last_poll_start: float | None = None
        self._poller: threading.Thread | None = None
        self._stop = threading.Event()
        self._activity = threading.Event()
        self._next_reconcile = 0.0
        self._delay = self._fast_poll
        #: Completed polls; each makes one ``changes.list`` call (more only when a
        #: single poll has more than 1000 changes to page through).
        self.poll_count = 0

    def note_activity(self) -> None:
        """A write happened: poll at the fast pace again."""
        self._activity.set()

    def stop(self) -> None:
        """Stop the poller (joined within 1 s) and cancel every watch."""
        self._stop.set()
        poller = self._poller
        if poller is not None and poller is not threading.current_thread():
            poller.join(timeout=1.0)
        with self._lock:
            for w in self._watches:
                w.cancel()
            self._watches.clear()

    def watch(self, prefix: str, callback: KeyCallback) -> Watch:
        """Call ``callback(key)`` for files created or replaced under ``prefix``.

        Callbacks run on the poller thread, or on a thread whose read polled the
        feed; never while a poll is in progress, so they may call the transport.
        """
        handle = Watch(prefix.strip("/"), callback)
        self._folders.ensure_root()
        with self._lock:
            if not self._baseline_taken:
                # Files indexed now predate the watch: reconciliation will not
                # report them (the feed still reports their later changes).
                self._baseline = self._catalog.markers()
                self._baseline_taken = True
            self._watches.append(handle)
            if self._poller is None:
                self._poller = threading.Thread(
                    target=self._poll_loop,
                    name=f"gdrive-poller-{self.identity}",
                    daemon=True,
                )
                self._poller.start()
        return handle

    def fire_queued(self) -> None:
        """Run the callbacks of the keys noticed so far (outside any poll)."""
        while True:
            with self._lock:
                if not self._to_fire:
                    return
                key = self._to_fire.pop(0)
                self._watches = [w for w in self._watches if not w.cancelled]
                watches = list(self._watches)
            for w in watches:
                try:
                    w.fire(key)
                except Exception:  # a broken callback must not kill the poller
                    logger.exception("watch callback for %s failed", key)

    def _notify(self, entry: _Entry, *, from_changes: bool) -> bool:
        ck = (entry.channel_id, entry.key)
        with self._lock:
            if self._notified.get(ck) == entry.marker:
                return False
            if not from_changes and self._baseline.get(ck) == entry.marker:
                return False  # existed before the watch and did not change
            self._notified[ck] = entry.marker
            if self._watches:
                self._to_fire.append(entry.key)
        return True

    def _poll_loop(self) -> None:
        delay = self._fast_poll
        self._next_reconcile = self._clock() + self._reconcile_interval
        while not self._stop.wait(delay):
            active, failed = False, False
            try:
                # A poll a read made meanwhile counts as this tick.
                active = self.sync(max_age=delay / 2)
            except Exception:  # keep polling whatever happens; log loudly
                logger.warning("Drive changes poll failed; backing off", exc_info=True)
                failed = True
            if self._clock() >= self._next_reconcile:
                # Independent of changes.list, so it also covers a failing feed.
                self._next_reconcile = self._clock() + self._reconcile_interval
                try:
                    active |= self._reconcile()
                except Exception:
                    logger.warning("Drive reconciliation failed", exc_info=True)
                self.fire_queued()
            if active or self._activity.is_set():
                self._activity.clear()
                delay = self._fast_poll
            elif failed:
                delay = self._poll_interval
            else:
                delay = min(delay * 2, self._poll_interval)
            self._delay = delay

    def sync(self, *, max_age: float) -> bool:
        """Poll the feed unless a poll started within ``max_age`` s covers us.

        Returns whether the poll saw anything new (False when skipped).
        """
        asked = self._clock()
        with self._poll_lock:
            last = self._last_poll_start
            if last is not None and last >= asked - max_age:
                active = False
            else:
                self._last_poll_start = self._clock()
                active = self._poll_once()
                if active and threading.current_thread() is not self._poller:
                    self._activity.set()  # the poller speeds up after activity
        self.fire_queued()
        return active

    def sync_for(self, what: str) -> None:
        """Make the index current enough to answer a question about ``what``.

        The first time ``what`` (a key, a prefix, a peer) is asked about, a feed
        poll that starts after the question is needed: the answer then includes
        everything written before it. When the same question comes again (a
        grid re-checking a pending reply), the poller thread keeps the answer
        fresh, so re-checks cost nothing while it runs (without it, any poll
        since the question was last asked is enough).
        """
        asked = self._clock()
        with self._lock:
            before = self._asked.pop(what, None)
            self._asked[what] = asked
            while len(self._asked) > 10_000:
                del self._asked[next(iter(self._asked))]
            last = self._last_poll_start
        if before is not None and (
            self.poller_alive or (last is not None and last > before)
        ):
            return
        self.sync(max_age=0.0)

    def _poll_once(self) -> bool:
        """One tick: one ``changes.list`` call for all channels (more only to page)."""
        self._folders.ensure_root()
        token = self._bookmarks.page_token
        active = False
        while token is not None:
            try:
                page = self._api.execute(
                    lambda s, t=token: s.changes().list(
                        pageToken=t,
                        pageSize=1000,
                        includeRemoved=True,
                        spaces="drive",
                        fields=CHANGE_FIELDS,
                    ),
                    "changes.list",
                )
            except (MessageNotFound, RemoteServiceError) as exc:
                if isinstance(exc, RemoteServiceError) and exc.status != 400:
                    raise
                # The token is no longer valid: start afresh and reconcile.
                fresh = self._api.execute(
                    lambda s: s.changes().getStartPageToken(),
                    "changes.getStartPageToken",
                )
                self._bookmarks.set_page_token(str(fresh["startPageToken"]))
                self._next_reconcile = 0.0
                break
            for change in page.get("changes", []):
                active |= self._apply_change(change)
            next_token = page.get("nextPageToken")
            if next_token:
                token = next_token
                continue
            self._bookmarks.set_page_token(str(page.get("newStartPageToken") or token))
            token = None
        with self._lock:
            self.poll_count += 1
        self._bookmarks.save()
        return active

    def _apply_change(self, change: dict[str, Any]) -> bool:
        file_id = str(change.get("fileId", ""))
        f = change.get("file")
        if change.get("removed") or f is None or f.get("trashed"):
            if self._catalog.channel(file_id) is not None:
                self._catalog.forget_channel(file_id)
            self._catalog.forget_file(file_id)
            return False
        if f.get("mimeType") == FOLDER_MIME:
            channel = self._folders.as_incoming_channel(f)
            if channel is None or not self._catalog.register(channel):
                return False
            if channel.writer == self.identity:
                return False  # made by this process: known and empty
            if channel.shared is not None:
                # A peer's shared blob folder: shared before its files were
                # written, so they follow in the feed; a key the feed did not
                # bring lists it then (saves a listing per broadcast).
                return False
            # A newly shared channel: its files may predate the share.
            for listed in self._lister.list_channel(channel):
                self._notify(listed, from_changes=False)
            return True
        ck = self._catalog.key_of(file_id)
        if ck is not None and ck[1] != f.get("name"):
            self._catalog.forget_file(file_id)  # renamed: the old key is gone
        active = False
        for parent in f.get("parents") or []:
            channel = self._catalog.channel(str(parent))
            if channel is None:
                continue
            entry = entry_for(channel, f)
            if entry is None:
                continue
            self._catalog.remember(entry)
            fired = self._notify(entry, from_changes=True)
            # A peer's heartbeat is delivered to watchers but does not switch
            # polling to the fast pace: beats cost the reader no extra request.
            active |= fired and entry.key.rsplit("/", 1)[-1] != HEARTBEAT_NAME
        return active

    def _reconcile(self) -> bool:
        """Safety net: list every channel and notify what changes.list missed."""
        active = bool(self._folders.discover(force=True))
        # Every channel this identity may read is registered when it is created,
        # shared with us (a folder change in the feed), or found at the first
        # start, so a file under an unknown folder is no channel's and costs no
        # lookup.
        for channel in self._catalog.channels():
            for entry in self._lister.list_channel(channel):
                active |= self._notify(entry, from_changes=False)
        return active

    @property
    def current_poll_delay(self) -> float:
        """Seconds the poller waits before its next ``changes.list`` call."""
        return self._delay

    @property
    def poller_alive(self) -> bool:
        """Whether the background poller thread is running."""
        poller = self._poller
        return poller is not None and poller.is_alive()
