"""The Google Drive transport (see the package docstring for the layout)."""

from __future__ import annotations

import hashlib
import logging
import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from syft_flwr.errors import (
    ConfigError,
    MessageNotFound,
    PermissionDenied,
    RemoteServiceError,
    TransportClosed,
    TransportError,
)
from syft_flwr.transports.base import HEARTBEAT_NAME, Transport, Watch, check_key
from syft_flwr.transports.gdrive._api import (
    CHUNK_GRANULARITY,
    FILE_FIELDS,
    SIMPLE_UPLOAD_LIMIT,
    _ApiMixin,
    bytes_upload,
)
from syft_flwr.transports.gdrive._auth import _ConstructorsMixin
from syft_flwr.transports.gdrive._changes import _ChangesMixin
from syft_flwr.transports.gdrive._folders import _FoldersMixin
from syft_flwr.transports.gdrive._index import _IndexMixin
from syft_flwr.transports.gdrive._layout import _Channel, _Entry, shared_folder_of
from syft_flwr.transports.gdrive._state import StateFile

__all__ = ["GDriveTransport"]

logger = logging.getLogger("syft_flwr.transports.gdrive")

_FAST_POLL = 0.25  # seconds between polls right after activity


def _is_heartbeat(key: str) -> bool:
    return key.rsplit("/", 1)[-1] == HEARTBEAT_NAME


class GDriveTransport(
    _ConstructorsMixin,
    _ApiMixin,
    _FoldersMixin,
    _IndexMixin,
    _ChangesMixin,
    Transport,
):
    """Move files between datasites through shared Google Drive folders.

    See the module docstring for the layout on Drive.

    Parameters
    ----------
    identity:
        Email of the Drive account this transport acts as (lower-cased). Checked
        once against ``about.get`` before the first folder is created.
    service_factory:
        Returns a new googleapiclient Drive v3 ``Resource``. Called once per thread
        that uses the transport, because ``httplib2.Http`` is not thread-safe.
    root_folder_name:
        Top-level folder of this identity's My Drive that holds its channel folders.
    allowed_peers:
        If given, only channels from these emails are read and only these peers are
        written to; others are ignored.
    sleep, clock:
        Injected for tests: the backoff sleep and a monotonic clock.
    poll_interval:
        Ceiling in seconds of the adaptive ``changes.list`` polling.
    max_retries:
        Retries per API call before :class:`RemoteServiceError` is raised.
    chunk_size:
        Chunk size in bytes of resumable uploads and of downloads; a multiple of
        256 KiB.
    page_size:
        ``pageSize`` of ``files.list`` calls (Drive allows up to 1000).
    reconcile_interval:
        Seconds between the poller's safety-net listings of every channel
        (default 1800; the changes feed is the primary signal).
    state_dir:
        Folder for this party's private Drive state (folder ids, the changes
        feed's page token, the file index), saved atomically. ``None`` keeps it in
        memory: every start is then a first start (one listing per channel).
    discovery_interval:
        Least seconds between safety-net searches for folders shared with this
        identity (new shares normally arrive through the changes feed).

    Raises
    ------
    ConfigError
        If a numeric parameter is out of range.
    """

    name = "gdrive"
    max_file_size = None
    #: One Drive folder per shared group, with a reader permission per reader.
    can_share = True
    default_rescan_interval = 2.0
    #: Each beat is a Drive write; the reader learns of it from the change feed
    #: it polls anyway, so a slower beat only delays noticing a dead data owner.
    default_heartbeat_interval = 10.0

    def __init__(
        self,
        identity: str,
        service_factory: Callable[[], Any],
        *,
        root_folder_name: str = "SyftBox",
        allowed_peers: Iterable[str] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        poll_interval: float = 2.0,
        max_retries: int = 6,
        chunk_size: int = 8 * 1024 * 1024,
        page_size: int = 1000,
        reconcile_interval: float = 1800.0,
        state_dir: str | os.PathLike[str] | None = None,
        discovery_interval: float = 30.0,
    ) -> None:
        # Google account addresses are case-insensitive and Drive reports them
        # lower-cased: on Drive the whole address is folded (SyftBox keeps the
        # local part exactly).
        super().__init__(identity.lower())
        if "@" not in self.identity:
            raise ConfigError(f"identity must be an email, got {identity!r}")
        if chunk_size <= 0 or chunk_size % CHUNK_GRANULARITY:
            raise ConfigError("chunk_size must be a positive multiple of 256 KiB")
        if poll_interval <= 0 or max_retries < 0 or not 1 <= page_size <= 1000:
            raise ConfigError(
                "poll_interval > 0, max_retries >= 0 and 1 <= page_size <= 1000"
            )
        if not root_folder_name or "/" in root_folder_name:
            raise ConfigError(f"invalid root_folder_name: {root_folder_name!r}")
        self._factory = service_factory
        self._root_name = root_folder_name
        self._allowed = (
            None
            if allowed_peers is None
            else {p.strip().lower() for p in allowed_peers}
        )
        self._sleep = sleep
        self._clock = clock
        self._poll_interval = poll_interval
        self._fast_poll = min(_FAST_POLL, poll_interval)
        self._max_retries = max_retries
        self._chunk_size = chunk_size
        self._page_size = page_size
        self._reconcile_interval = reconcile_interval
        self._discovery_every = discovery_interval
        safe = re.sub(r"[^A-Za-z0-9_.@+-]", "_", f"{self.identity}-{root_folder_name}")
        self._state_file = StateFile(
            Path(state_dir) / f"{safe}.json" if state_dir is not None else None,
            self.identity,
            root_folder_name,
        )
        self._rng = random.Random()

        self._local = threading.local()
        self._services: list[Any] = []
        self._lock = threading.RLock()  # guards the caches below; never held over I/O
        self._setup_lock = threading.RLock()  # serializes folder creation
        self._key_locks = [threading.Lock() for _ in range(64)]
        self._verified = False
        self._rescan = False  # the saved state proved stale: start afresh
        self._root_id: str | None = None
        self._reserved: dict[str, str] = {}  # slot -> id reserved for a folder
        self._id_pool: list[str] = []  # ids from files.generateIds, unused yet
        self._share_checked: set[str] = set()  # peers whose sharing prepare() fixed
        self._channels: dict[str, _Channel] = {}  # folder id -> channel
        self._write_ids: dict[str, str] = {}  # reader -> my channel folder id
        self._public_shared: set[tuple[str, str]] = set()  # (public cid, peer)
        self._loaded: set[str] = set()  # channel ids whose listing is in the index
        self._index: dict[tuple[str, str], _Entry] = {}  # (channel id, key) -> entry
        self._by_file: dict[str, tuple[str, str]] = {}  # file id -> (channel id, key)
        self._index_changed = False
        self._last_discovery: float | None = None
        self._shared_searched: dict[str, float] = {}  # folder key -> last search

        self._watches: list[Watch] = []
        self._notified: dict[tuple[str, str], tuple[str, str, str | None]] = {}
        self._baseline: dict[tuple[str, str], tuple[str, str, str | None]] = {}
        self._baseline_taken = False
        self._poll_lock = threading.RLock()  # one feed poll at a time
        self._to_fire: list[str] = []  # keys noticed, callbacks not yet run
        self._last_poll_start: float | None = None
        self._asked: dict[str, float] = {}  # question -> when last asked
        self._page_token: str | None = None
        self._poller: threading.Thread | None = None
        self._stop = threading.Event()
        self._activity = threading.Event()
        self._next_reconcile = 0.0
        self._delay = self._fast_poll
        #: Completed polls; each makes one ``changes.list`` call (more only when a
        #: single poll has more than 1000 changes to page through).
        self.poll_count = 0

    def _check_open(self) -> None:
        if self._closed:
            raise TransportClosed("the Google Drive transport is closed")

    def _allowed_peer(self, email: str) -> bool:
        return email == self.identity or self._allowed is None or email in self._allowed

    # -- primitives ------------------------------------------------------------------------------
    def put(self, key: str, data: bytes) -> None:
        """Upload ``data`` under ``key`` into this identity's channel folder.

        A new file is created with an id reserved beforehand, so a create whose
        response is lost is never stored twice.

        Raises
        ------
        PermissionDenied
            If this identity is not a party of the key, or the other party is not
            in ``allowed_peers``.
        RemoteServiceError
            If Drive keeps failing after the retries.
        """
        self._check_open()
        folder_key = shared_folder_of(check_key(key))
        if folder_key is not None:
            self._put_shared(key, folder_key, bytes(data))
            return
        _, other = self._parties_for(key)
        if not self._allowed_peer(other):
            raise PermissionDenied(f"{other} is not an allowed peer")
        data = bytes(data)
        with self._key_locks[hash(key) % len(self._key_locks)]:
            for attempt in range(2):
                cid = self._write_channel(other, create=True)
                assert cid is not None
                try:
                    self._put_in(cid, key, data)
                    break
                except MessageNotFound:
                    if attempt:
                        raise
                    # The saved channel folder is gone: forget it, rescan, recreate.
                    self._forget_channel(cid)
                    with self._lock:
                        self._root_id = None
                        self._rescan = True
        if not _is_heartbeat(key):  # a beat is not work: polling stays slow
            self._activity.set()

    def _put_shared(self, key: str, folder_key: str, data: bytes) -> None:
        """Upload into my shared blob folder (created unshared if :meth:`share`
        did not make it first)."""
        if folder_key.split("/", 1)[0] != self.identity:
            raise PermissionDenied(f"{key!r} is in another datasite's shared folder")
        with self._key_locks[hash(key) % len(self._key_locks)]:
            cid = self._shared_id(folder_key, create=True)
            assert cid is not None
            try:
                self._put_in(cid, key, data)
            except MessageNotFound:
                # Deleted behind our back: its readers are gone with it, so a
                # new folder would not reach them. Forget it and fail loudly.
                self._forget_channel(cid)
                raise
            except TransportError:
                # The caller falls back to a copy per request: a folder still
                # empty would never be listed, hence never swept. Remove it.
                self._drop_if_empty(cid)
                raise
        self._activity.set()

    def _put_in(self, cid: str, key: str, data: bytes) -> None:
        with self._lock:
            channel = self._channels.get(cid)
            loaded = cid in self._loaded
            entry = self._index.get((cid, key))
        if channel is None:  # forgotten meanwhile (its folder was removed)
            raise MessageNotFound(f"channel folder {cid} is gone")
        if entry is None and not loaded:
            # Once per channel: afterwards my own index is authoritative for it.
            self._list_channel(channel)
            with self._lock:
                entry = self._index.get((cid, key))
        result: dict[str, Any] | None = None
        if entry is not None:
            try:
                result = self._upload(data, key, cid, file_id=entry.file_id)
            except MessageNotFound:
                self._drop_entry((cid, key))  # deleted behind our back: create anew
        if result is None:
            result = self._upload(data, key, cid, file_id=None)
        if result.get("md5Checksum") not in (None, hashlib.md5(data).hexdigest()):
            raise RemoteServiceError(f"upload of {key!r} was corrupted (md5 mismatch)")
        new = self._entry_for(channel, result)
        if new is not None:
            self._remember(new)

    def _upload(
        self, data: bytes, key: str, cid: str, *, file_id: str | None
    ) -> dict[str, Any]:
        resumable = len(data) > SIMPLE_UPLOAD_LIMIT
        media = bytes_upload(data, self._chunk_size, resumable=resumable)
        body: dict[str, Any] = {}
        if file_id is None:
            body = {
                "id": self._new_id(),
                "name": key,
                "parents": [cid],
                "mimeType": "application/octet-stream",
            }
        if not resumable:
            if file_id is None:
                return self._create(body, "upload", media)
            return dict(
                self._call(
                    lambda: (
                        self._svc()
                        .files()
                        .update(fileId=file_id, media_body=media, fields=FILE_FIELDS)
                        .execute()
                    ),
                    "upload",
                )
            )
        # Resumable: the session URL survives failures, so each chunk is retried on
        # its own; a repeated session for the same id ends in 409, not a 2nd file.
        svc = self._svc()
        if file_id is None:
            request = svc.files().create(
                body=body, media_body=media, fields=FILE_FIELDS
            )
        else:
            request = svc.files().update(
                fileId=file_id, media_body=media, fields=FILE_FIELDS
            )
        response = None
        try:
            while response is None:
                _, response = self._call(
                    request.next_chunk, "resumable upload", resumable=True
                )
        except RemoteServiceError as exc:
            if exc.status != 409 or file_id is not None:
                raise
            return self._get_meta(str(body["id"]))
        return dict(response)

    def delete(self, key: str) -> None:
        """Delete this identity's file under ``key``.

        Drive lets only a file's owner delete it, so a key that exists only in the
        peer's channel is left alone (silently): the peer must delete it.
        """
        self._check_open()
        check_key(key)
        if shared_folder_of(key) is not None:
            self.delete_many([key])  # the folder goes with its last file
            return
        try:
            _, other = self._parties_for(key)
        except PermissionDenied:
            return
        for file_id in self._my_file_ids(key, other):
            self._delete_id(file_id, key)

    def _my_file_ids(self, key: str, other: str) -> list[str]:
        cid = self._write_channel(other, create=False)
        if cid is None:
            return []
        with self._lock:
            channel = self._channels.get(cid)
            entry = self._index.get((cid, key))
        if entry is not None:
            return [entry.file_id]
        if channel is None or cid in self._loaded:
            return []  # only I write there, and the index has all of it
        return [e.file_id for e in self._list_channel(channel) if e.key == key]

    def _delete_id(self, file_id: str, key: str) -> None:
        try:
            self._execute(lambda s: s.files().delete(fileId=file_id), "delete")
        except (MessageNotFound, PermissionDenied):
            pass  # already gone, or not ours to delete
        self._forget_file(file_id)

    def delete_many(self, keys: Iterable[str]) -> None:
        """Delete several of this identity's keys with batched ``files.delete`` calls."""
        self._check_open()
        targets: list[tuple[str, str]] = []
        shared: dict[str, set[str]] = {}  # my shared folder id -> keys to delete
        for key in keys:
            check_key(key)
            folder_key = shared_folder_of(key)
            if folder_key is not None:
                cid = self._my_shared_id(folder_key)
                if cid is not None:
                    shared.setdefault(cid, set()).add(key)
                continue
            try:
                _, other = self._parties_for(key)
            except PermissionDenied:
                continue
            targets += [(fid, key) for fid in self._my_file_ids(key, other)]
        for cid, doomed in shared.items():
            targets += self._delete_shared(cid, doomed)
        for start in range(0, len(targets), 100):  # Drive's per-batch cap
            self._delete_batch(targets[start : start + 100])

    def _my_shared_id(self, folder_key: str) -> str | None:
        if folder_key.split("/", 1)[0] != self.identity:
            return None  # only its owner deletes a shared folder's files
        return self._shared_id(folder_key)

    def _delete_shared(self, cid: str, doomed: set[str]) -> list[tuple[str, str]]:
        """Delete ``doomed`` keys of my shared folder ``cid``.

        When they are all it holds (my index of it is complete: only I write
        there), the folder itself goes, with one ``files.delete``; its readers'
        access goes with it. Otherwise returns the files to delete one by one.
        """
        with self._lock:
            channel = self._channels.get(cid)
            loaded = cid in self._loaded
        if channel is None:
            return []
        if not loaded:
            self._list_channel(channel)
        with self._lock:
            held = {k: e.file_id for (c, k), e in self._index.items() if c == cid}
        if set(held) <= doomed:
            self._delete_folder(cid)
            return []
        return [(held[k], k) for k in sorted(doomed) if k in held]

    # -- lifecycle ----------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the poller (joined within 1 s) and close HTTP connections; idempotent."""
        if self._closed:
            return
        super().close()
        self._stop.set()
        poller = self._poller
        if poller is not None and poller is not threading.current_thread():
            poller.join(timeout=1.0)
        with self._lock:
            services, self._services = self._services, []
            for w in self._watches:
                w.cancel()
            self._watches.clear()
        for svc in services:
            try:
                svc.close()
            except Exception:  # noqa: BLE001 - best effort on shutdown
                pass
        try:
            self._save_state()
        except OSError:
            logger.warning("could not save the Drive state", exc_info=True)

    def __repr__(self) -> str:
        return f"GDriveTransport(identity={self.identity!r}, root={self._root_name!r})"
