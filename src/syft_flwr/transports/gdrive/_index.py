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
from typing import Any

from syft_flwr.errors import (
    ConfigError,
    MessageNotFound,
    PermissionDenied,
    RemoteServiceError,
    UnsafeFileError,
)
from syft_flwr.transports.base import check_key
from syft_flwr.transports.gdrive._layout import (
    FOLDER_MIME,
    _Channel,
    _Entry,
    key_parties,
    shared_folder_of,
)

__all__: list[str] = []


class _IndexMixin:
    """``{(channel, key): file}`` as last seen, and the reads served from it."""

    # -- index -----------------------------------------------------------------------------
    def _entry_for(self, channel: _Channel, f: dict[str, Any]) -> _Entry | None:
        """Return an index entry for file ``f`` of ``channel`` if it is acceptable."""
        if f.get("mimeType") == FOLDER_MIME or f.get("trashed"):
            return None
        key = str(f.get("name", ""))
        if self._file_owner(f) != channel.writer:
            return None  # a stranger (or the reader) put it there: ignored
        if channel.shared is not None:
            # A shared blob folder holds only files directly under its key.
            if shared_folder_of(key) != channel.shared:
                return None
        else:
            try:
                parties = frozenset(key_parties(key))
            except ConfigError:
                return None
            if parties != channel.parties or shared_folder_of(key) is not None:
                return None
        return self._make_entry(
            channel,
            str(f["id"]),
            key,
            f.get("md5Checksum"),
            f.get("size"),
            str(f.get("modifiedTime", "")),
        )

    @staticmethod
    def _make_entry(
        channel: _Channel,
        file_id: str,
        key: str,
        md5: str | None,
        size: Any,
        modified: str,
    ) -> _Entry:
        return _Entry(
            file_id=file_id,
            channel_id=channel.id,
            key=key,
            md5=md5,
            size=int(size) if size is not None else None,
            modified=modified,
        )

    def _remember(self, entry: _Entry) -> _Entry | None:
        """Index ``entry``; returns the entry of the same key it displaced, if any.

        Two files under one key (left by older versions, whose retried creates
        could store a file twice) resolve to the newest.
        """
        ck = (entry.channel_id, entry.key)
        with self._lock:
            old = self._index.get(ck)
            if old is not None and old.file_id != entry.file_id:
                if old.modified > entry.modified:
                    return entry
                self._by_file.pop(old.file_id, None)
            self._index[ck] = entry
            self._by_file[entry.file_id] = ck
            self._index_changed = True
        return old if old is not None and old.file_id != entry.file_id else None

    def _drop_entry(self, ck: tuple[str, str]) -> None:
        with self._lock:
            entry = self._index.pop(ck, None)
            if entry is not None:
                self._by_file.pop(entry.file_id, None)
                self._index_changed = True

    def _forget_file(self, file_id: str) -> None:
        with self._lock:
            ck = self._by_file.pop(file_id, None)
            entry = self._index.get(ck) if ck is not None else None
            if entry is not None and entry.file_id == file_id:
                del self._index[entry.channel_id, entry.key]
                self._index_changed = True

    def _list_channel(self, channel: _Channel) -> list[_Entry]:
        """List every acceptable file of a channel (parent-scoped, all pages)."""
        q = f"'{channel.id}' in parents and trashed = false"
        with self._lock:
            before = {
                ck: e.file_id for ck, e in self._index.items() if ck[0] == channel.id
            }
        try:
            files = self._list_all(q, "list channel")
        except MessageNotFound:
            self._forget_channel(channel.id)
            return []
        entries = [
            e for e in (self._entry_for(channel, f) for f in files) if e is not None
        ]
        listed = {e.file_id for e in entries}
        with self._lock:
            # Drop what vanished, but keep entries a concurrent put added meanwhile.
            for ck, fid in before.items():
                entry = self._index.get(ck)
                if fid not in listed and entry is not None and entry.file_id == fid:
                    self._drop_entry(ck)
        duplicates = [d for d in map(self._remember, entries) if d is not None]
        with self._lock:
            self._loaded.add(channel.id)
        if channel.writer == self.identity:
            for dup in duplicates:  # mine: only I can delete them
                self._delete_id(dup.file_id, dup.key)
        return [e for e in entries if e not in duplicates]

    def _parties_for(self, key: str, *, read: bool = False) -> tuple[str, str]:
        """Return ``(me, other)`` for a key this identity takes part in.

        With ``read``, a peer's public key (a non-RPC key ``<peer>/...``, e.g. its
        ``public/did.json``) is readable too: ``other`` is then that peer.
        """
        a, b = key_parties(key)
        if read and a == b:
            return self.identity, a
        if self.identity not in (a, b):
            raise PermissionDenied(f"{self.identity} is not a party of {key!r}")
        return self.identity, b if a == self.identity else a

    def _channels_for_key(self, key: str, other: str) -> list[_Channel]:
        """The channels that may hold ``key``: mine to ``other``, then theirs."""
        self._ensure_root()
        parties = frozenset(key_parties(key))

        def matching() -> list[_Channel]:
            with self._lock:
                mine = [
                    c
                    for c in self._channels.values()
                    if c.writer == self.identity
                    and c.reader == other
                    and c.shared is None
                ]
            return [c for c in mine + self._incoming(other) if c.parties == parties]

        channels = matching()
        if other != self.identity and all(c.writer == self.identity for c in channels):
            # No channel from the peer yet: a new share arrives in the feed.
            self._sync_for(f"peer:{other}")
            channels = matching()
        return channels

    def _incoming(self, other: str) -> list[_Channel]:
        if other == self.identity:
            return []
        with self._lock:
            return [
                c
                for c in self._channels.values()
                if c.writer == other
                and c.reader in (self.identity, other)
                and c.shared is None
            ]

    def _lookup(self, key: str, *, sync: bool = True) -> list[_Entry]:
        """Entries of ``key`` (mine first); on a miss, one shared feed poll first."""
        check_key(key)
        folder_key = shared_folder_of(key)
        if folder_key is not None:
            return self._lookup_shared(key, folder_key, sync=sync)
        try:
            _, other = self._parties_for(key, read=True)
        except PermissionDenied:
            return []
        for attempt in range(2):
            channels = self._channels_for_key(key, other)
            with self._lock:
                for c in channels:
                    if c.id not in self._loaded:
                        break
                else:
                    c = None
                found = [self._index.get((ch.id, key)) for ch in channels]
            if c is not None:  # a channel met before its listing finished
                self._list_channel(c)
                continue
            entries = [e for e in found if e is not None]
            mine_only = all(ch.writer == self.identity for ch in channels)
            if entries or not sync or attempt or mine_only:
                # My own channels need no poll: only I write there.
                return entries
            self._sync_for(key)
        return []

    def _lookup_shared(self, key: str, folder_key: str, *, sync: bool) -> list[_Entry]:
        """The entry of ``key`` in its shared blob folder (only its owner's folder)."""
        mine = folder_key.split("/", 1)[0] == self.identity
        for attempt in range(2):
            cid = self._shared_id(folder_key)
            if cid is None:
                return []
            with self._lock:
                channel = self._channels.get(cid)
                loaded = cid in self._loaded
                entry = self._index.get((cid, key))
            if channel is not None and not loaded and entry is None:
                self._list_channel(channel)
                with self._lock:
                    entry = self._index.get((cid, key))
            if entry is not None or mine or not sync or attempt:
                return [entry] if entry is not None else []
            self._sync_for(key)
        return []

    # -- reads ---------------------------------------------------------------------------
    def get(self, key: str) -> bytes:
        """Return the bytes under ``key`` (mine first, then the peer's copy).

        Raises
        ------
        MessageNotFound
            If neither channel holds the key (yet).
        """
        self._check_open()
        for entry in self._lookup(key):
            try:
                return self._download(entry)
            except MessageNotFound:
                self._forget_file(entry.file_id)
        raise MessageNotFound(key)

    def read_limited(self, key: str, max_bytes: int) -> bytes:
        """Read an untrusted file: refused before downloading if Drive says it is
        larger than ``max_bytes``, and the download stops past the limit."""
        self._check_open()
        for entry in self._lookup(key):
            if entry.size is not None and entry.size > max_bytes:
                raise UnsafeFileError(
                    f"{key} holds {entry.size} bytes, more than the {max_bytes} "
                    "allowed; not downloaded"
                )
            try:
                return self._download(entry, max_bytes=max_bytes)
            except MessageNotFound:
                self._forget_file(entry.file_id)
        raise MessageNotFound(key)

    def _download(self, entry: _Entry, *, max_bytes: int | None = None) -> bytes:
        from googleapiclient.http import MediaIoBaseDownload

        for _ in range(3):
            buf = io.BytesIO()
            request = self._svc().files().get_media(fileId=entry.file_id)
            loader = MediaIoBaseDownload(buf, request, chunksize=self._chunk_size)
            done = False
            while not done:
                _, done = self._call(loader.next_chunk, "download")
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
            meta = self._get_meta(entry.file_id)
            with self._lock:
                channel = self._channels.get(entry.channel_id)
            fresh = self._entry_for(channel, meta) if channel else None
            if fresh is None:
                raise MessageNotFound(entry.key)
            self._remember(fresh)
            if fresh.md5 == md5:
                return data
            entry = fresh
        raise RemoteServiceError(f"{entry.key!r} kept changing during download")

    def exists(self, key: str) -> bool:
        """Return whether ``key`` exists.

        My own files are answered from the index (only this identity deletes
        them); a peer's indexed file is confirmed with one ``files.get`` by id,
        which, unlike search, is strongly consistent. A miss costs at most one
        ``changes.list``, shared with other misses.
        """
        self._check_open()
        for entry in self._lookup(key):
            with self._lock:
                channel = self._channels.get(entry.channel_id)
            if channel is not None and channel.writer == self.identity:
                return True
            if self._still_there(entry):
                return True
        return False

    def _still_there(self, entry: _Entry) -> bool:
        try:
            meta = self._execute(
                lambda s: s.files().get(fileId=entry.file_id, fields="id,trashed"),
                "get file",
            )
        except MessageNotFound:
            meta = {"trashed": True}
        if meta.get("trashed"):
            self._forget_file(entry.file_id)
            return False
        return True

    def list(self, prefix: str) -> list[str]:
        """Return the keys under ``prefix`` in every channel this identity can read.

        Answered from the index after one (shared) poll of the changes feed, so a
        file a peer has just written is included.
        """
        self._check_open()
        prefix = prefix.strip("/")
        if prefix:
            check_key(prefix)
        owner = prefix.split("/", 1)[0].lower() if prefix else None
        self._ensure_root()
        self._sync_for(f"list:{prefix}")
        with self._lock:
            channels = [
                c
                for c in self._channels.values()
                if owner is None or owner in c.parties
            ]
        keys: set[str] = set()
        for channel in channels:
            with self._lock:
                loaded = channel.id in self._loaded
                entries = [e for ck, e in self._index.items() if ck[0] == channel.id]
            if not loaded:
                entries = self._list_channel(channel)
            for entry in entries:
                if (
                    not prefix
                    or entry.key == prefix
                    or entry.key.startswith(prefix + "/")
                ):
                    keys.add(entry.key)
        return sorted(keys)
