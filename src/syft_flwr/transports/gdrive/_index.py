"""The local index of channel files, and reads (get, exists, list) served from it.

The index ``{(channel id, key): file}`` is filled by one listing per channel
(at the first start, or when a peer's channel appears) and kept current by the
changes feed; it is saved with the feed's page token. Reads answer from it: a
peer's key it does not hold costs one ``changes.list`` the first time it is
asked for (none when asked again while the poller runs) instead of a search
per key, and is then "not there yet". Nothing here searches by name.
"""

from __future__ import annotations

import hashlib
import io

from syft_flwr.errors import (
    MessageNotFound,
    PermissionDenied,
    RemoteServiceError,
    UnsafeFileError,
)
from syft_flwr.transports.base import check_key
from syft_flwr.transports.gdrive._api import DriveApi
from syft_flwr.transports.gdrive._catalog import Catalog
from syft_flwr.transports.gdrive._changes import ChangesFeed
from syft_flwr.transports.gdrive._folders import Folders
from syft_flwr.transports.gdrive._layout import (
    Peers,
    _Channel,
    _Entry,
    key_parties,
    shared_folder_of,
)
from syft_flwr.transports.gdrive._listing import ChannelLister, entry_for
from syft_flwr.transports.gdrive._shared import SharedFolders

__all__ = ["Reader"]


class Reader:
    """Reads (get, read_limited, exists, list) answered from the catalog.

    A key the catalog lacks costs one shared feed poll (through
    ``feed.sync_for``) before it is "not there yet".
    """

    def __init__(
        self,
        peers: Peers,
        api: DriveApi,
        catalog: Catalog,
        folders: Folders,
        lister: ChannelLister,
        feed: ChangesFeed,
        shared: SharedFolders,
        *,
        chunk_size: int,
    ) -> None:
        self.identity = peers.identity
        self._peers = peers
        self._api = api
        self._catalog = catalog
        self._folders = folders
        self._lister = lister
        self._feed = feed
        self._shared = shared
        self._chunk_size = chunk_size

    def _channels_for_key(self, key: str, other: str) -> list[_Channel]:
        """The channels that may hold ``key``: mine to ``other``, then theirs."""
        self._folders.ensure_root()
        parties = frozenset(key_parties(key))

        def matching() -> list[_Channel]:
            mine = self._catalog.mine_to(other)
            return [
                c for c in mine + self._catalog.incoming(other) if c.parties == parties
            ]

        channels = matching()
        if other != self.identity and all(c.writer == self.identity for c in channels):
            # No channel from the peer yet: a new share arrives in the feed.
            self._feed.sync_for(f"peer:{other}")
            channels = matching()
        return channels

    def lookup(self, key: str, *, sync: bool = True) -> list[_Entry]:
        """Entries of ``key`` (mine first); on a miss, one shared feed poll first."""
        check_key(key)
        folder_key = shared_folder_of(key)
        if folder_key is not None:
            return self._lookup_shared(key, folder_key, sync=sync)
        try:
            _, other = self._peers.parties_for(key, read=True)
        except PermissionDenied:
            return []
        for attempt in range(2):
            channels = self._channels_for_key(key, other)
            c, found = self._catalog.lookup(channels, key)
            if c is not None:  # a channel met before its listing finished
                self._lister.list_channel(c)
                continue
            entries = [e for e in found if e is not None]
            mine_only = all(ch.writer == self.identity for ch in channels)
            if entries or not sync or attempt or mine_only:
                # My own channels need no poll: only I write there.
                return entries
            self._feed.sync_for(key)
        return []

    def _lookup_shared(self, key: str, folder_key: str, *, sync: bool) -> list[_Entry]:
        """The entry of ``key`` in its shared blob folder (only its owner's folder)."""
        mine = folder_key.split("/", 1)[0] == self.identity
        for attempt in range(2):
            cid = self._shared.folder_id(folder_key)
            if cid is None:
                return []
            channel, loaded, entry = self._catalog.view(cid, key)
            if channel is not None and not loaded and entry is None:
                self._lister.list_channel(channel)
                entry = self._catalog.entry(cid, key)
            if entry is not None or mine or not sync or attempt:
                return [entry] if entry is not None else []
            self._feed.sync_for(key)
        return []

    def get(self, key: str) -> bytes:
        """The bytes under ``key``, mine first (see :meth:`GDriveTransport.get`)."""
        for entry in self.lookup(key):
            try:
                return self._download(entry)
            except MessageNotFound:
                self._catalog.forget_file(entry.file_id)
        raise MessageNotFound(key)

    def read_limited(self, key: str, max_bytes: int) -> bytes:
        """Read an untrusted file of at most ``max_bytes`` bytes."""
        for entry in self.lookup(key):
            if entry.size is not None and entry.size > max_bytes:
                raise UnsafeFileError(
                    f"{key} holds {entry.size} bytes, more than the {max_bytes} "
                    "allowed; not downloaded"
                )
            try:
                return self._download(entry, max_bytes=max_bytes)
            except MessageNotFound:
                self._catalog.forget_file(entry.file_id)
        raise MessageNotFound(key)

    def _download(self, entry: _Entry, *, max_bytes: int | None = None) -> bytes:
        from googleapiclient.http import MediaIoBaseDownload

        for _ in range(3):
            buf = io.BytesIO()
            request = self._api.svc().files().get_media(fileId=entry.file_id)
            loader = MediaIoBaseDownload(buf, request, chunksize=self._chunk_size)
            done = False
            while not done:
                _, done = self._api.call(loader.next_chunk, "download")
                if max_bytes is not None and buf.tell() > max_bytes:
                    raise UnsafeFileError(
                        f"{entry.key} holds more than the {max_bytes} bytes allowed"
                    )
            data = buf.getvalue()
            md5 = hashlib.md5(data).hexdigest()
            if entry.md5 is None or md5 == entry.md5:
                return data
            # The file was replaced since we indexed it, or between two chunks
            # of this download: check what Drive holds now.
            meta = self._api.get_meta(entry.file_id)
            channel = self._catalog.channel(entry.channel_id)
            fresh = entry_for(channel, meta) if channel else None
            if fresh is None:
                raise MessageNotFound(entry.key)
            self._catalog.remember(fresh)
            if fresh.md5 == md5:
                return data
            entry = fresh
        raise RemoteServiceError(f"{entry.key!r} kept changing during download")

    def exists(self, key: str) -> bool:
        """Whether ``key`` exists (see :meth:`GDriveTransport.exists`)."""
        for entry in self.lookup(key):
            channel = self._catalog.channel(entry.channel_id)
            if channel is not None and channel.writer == self.identity:
                return True
            if self._still_there(entry):
                return True
        return False

    def _still_there(self, entry: _Entry) -> bool:
        try:
            meta = self._api.execute(
                lambda s: s.files().get(fileId=entry.file_id, fields="id,trashed"),
                "get file",
            )
        except MessageNotFound:
            meta = {"trashed": True}
        if meta.get("trashed"):
            self._catalog.forget_file(entry.file_id)
            return False
        return True

    def list(self, prefix: str) -> list[str]:
        """The keys under ``prefix`` in every channel I can read."""
        prefix = prefix.strip("/")
        if prefix:
            check_key(prefix)
        owner = prefix.split("/", 1)[0].lower() if prefix else None
        self._folders.ensure_root()
        self._feed.sync_for(f"list:{prefix}")
        channels = [
            c for c in self._catalog.channels() if owner is None or owner in c.parties
        ]
        keys: set[str] = set()
        for channel in channels:
            loaded = self._catalog.is_loaded(channel.id)
            entries = self._catalog.entries_of(channel.id)
            if not loaded:
                entries = self._lister.list_channel(channel)
            for entry in entries:
                if (
                    not prefix
                    or entry.key == prefix
                    or entry.key.startswith(prefix + "/")
                ):
                    keys.add(entry.key)
        return sorted(keys)
