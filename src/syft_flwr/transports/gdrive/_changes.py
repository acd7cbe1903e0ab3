"""The changes feed: one ``changes.list`` per poll for every channel."""

from __future__ import annotations

import logging
import threading
from typing import Any

from syft_flwr.errors import MessageNotFound, PermissionDenied, RemoteServiceError
from syft_flwr.transports.base import KeyCallback, Watch
from syft_flwr.transports.gdrive._api import CHANGE_FIELDS, FILE_FIELDS
from syft_flwr.transports.gdrive._layout import FOLDER_MIME, _Channel, _Entry

__all__: list[str] = []

logger = logging.getLogger("syft_flwr.transports.gdrive")


class _ChangesMixin:
    """Watches served by one poller thread per transport."""

    # -- watching ----------------------------------------------------------------------------------
    def watch(self, prefix: str, callback: KeyCallback) -> Watch:
        """Call ``callback(key)`` for files created or replaced under ``prefix``.

        Callbacks run on the transport's poller thread.
        """
        self._check_open()
        handle = Watch(prefix.strip("/"), callback)
        self._ensure_root()
        with self._setup_lock:
            with self._lock:
                need_start = self._page_token is None
            if need_start:
                # Both before returning: every change after this point is in the
                # feed, and the baseline holds only files that predate the watch.
                token = self._execute(
                    lambda s: s.changes().getStartPageToken(),
                    "changes.getStartPageToken",
                )["startPageToken"]
                self._snapshot_baseline()
                with self._lock:
                    self._page_token = str(token)
        with self._lock:
            self._watches.append(handle)
            if self._poller is None:
                self._poller = threading.Thread(
                    target=self._poll_loop,
                    name=f"gdrive-poller-{self.identity}",
                    daemon=True,
                )
                self._poller.start()
        return handle

    def _fire(self, key: str) -> None:
        with self._lock:
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
        self._fire(entry.key)
        return True

    def _poll_loop(self) -> None:
        delay = self._fast_poll
        self._next_reconcile = self._clock() + self._reconcile_interval
        while not self._stop.wait(delay):
            active, failed = False, False
            try:
                active = self._poll_once()
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
            if active or self._activity.is_set():
                self._activity.clear()
                delay = self._fast_poll
            elif failed:
                delay = self._poll_interval
            else:
                delay = min(delay * 2, self._poll_interval)
            self._delay = delay

    def _snapshot_baseline(self) -> None:
        """Record what exists now, so reconciliation only reports what is newer."""
        self._discover(force=True)
        with self._lock:
            channels = list(self._channels.values())
        for channel in channels:
            for entry in self._list_channel(channel):
                with self._lock:
                    self._baseline[(channel.id, entry.key)] = entry.marker

    def _poll_once(self) -> bool:
        """One tick: one ``changes.list`` call for all channels (more only to page)."""
        with self._lock:
            token = self._page_token
        active = False
        while token is not None:
            try:
                page = self._execute(
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
                fresh = self._execute(
                    lambda s: s.changes().getStartPageToken(),
                    "changes.getStartPageToken",
                )
                with self._lock:
                    self._page_token = str(fresh["startPageToken"])
                self._next_reconcile = 0.0
                break
            for change in page.get("changes", []):
                active |= self._apply_change(change)
            next_token = page.get("nextPageToken")
            if next_token:
                token = next_token
                continue
            with self._lock:
                self._page_token = str(page.get("newStartPageToken") or token)
            token = None
        with self._lock:
            self.poll_count += 1
        return active

    def _apply_change(self, change: dict[str, Any]) -> bool:
        file_id = str(change.get("fileId", ""))
        f = change.get("file")
        if change.get("removed") or f is None or f.get("trashed"):
            with self._lock:
                is_channel = file_id in self._channels
            if is_channel:
                self._forget_channel(file_id)
            self._forget_file(file_id)
            return False
        if f.get("mimeType") == FOLDER_MIME:
            channel = self._as_incoming_channel(f)
            if channel is None or not self._register(channel):
                return False
            # A newly shared channel: its files may predate the share.
            for entry in self._list_channel(channel):
                self._notify(entry, from_changes=False)
            return True
        active = False
        for parent in f.get("parents") or []:
            channel = self._channel_of(str(parent))
            if channel is None:
                continue
            entry = self._entry_for(channel, f)
            if entry is None:
                continue
            self._remember(entry)
            active |= self._notify(entry, from_changes=True)
        return active

    def _channel_of(self, folder_id: str) -> _Channel | None:
        """Return the channel a folder is, looking unknown folders up once."""
        with self._lock:
            if folder_id in self._channels:
                return self._channels[folder_id]
            if folder_id in self._not_channels:
                return None
        try:
            f = self._execute(
                lambda s: s.files().get(fileId=folder_id, fields=FILE_FIELDS),
                "get folder",
            )
        except (MessageNotFound, PermissionDenied):
            f = {}
        channel = self._as_incoming_channel(f) if f else None
        if channel is None:
            with self._lock:
                self._not_channels.add(folder_id)
            return None
        self._register(channel)
        return channel

    def _reconcile(self) -> bool:
        """Safety net: list every channel and notify what changes.list missed."""
        active = bool(self._discover(force=True))
        with self._lock:
            channels = list(self._channels.values())
        for channel in channels:
            for entry in self._list_channel(channel):
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
