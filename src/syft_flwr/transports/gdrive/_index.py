"""The local index of channel files, and reads (get, exists, list)."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable
from typing import Any

from syft_flwr.errors import (
    ConfigError,
    MessageNotFound,
    PermissionDenied,
    RemoteServiceError,
)
from syft_flwr.transports.base import check_key
from syft_flwr.transports.gdrive._api import FILE_FIELDS
from syft_flwr.transports.gdrive._layout import (
    FOLDER_MIME,
    _Channel,
    _Entry,
    escape_query_value,
    key_parties,
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
        try:
            parties = frozenset(key_parties(key))
        except ConfigError:
            return None
        if parties != channel.parties or self._file_owner(f) != channel.writer:
            return None
        size = f.get("size")
        return _Entry(
            file_id=str(f["id"]),
            channel_id=channel.id,
            key=key,
            md5=f.get("md5Checksum"),
            size=int(size) if size is not None else None,
            modified=str(f.get("modifiedTime", "")),
        )

    def _remember(self, entry: _Entry) -> None:
        ck = (entry.channel_id, entry.key)
        with self._lock:
            old = self._index.get(ck)
            # Duplicate names (e.g. a retried create) resolve to the newest file.
            if (
                old is not None
                and old.file_id != entry.file_id
                and old.modified > entry.modified
            ):
                return
            if old is not None and old.file_id != entry.file_id:
                self._by_file.pop(old.file_id, None)
            self._index[ck] = entry
            self._by_file[entry.file_id] = ck

    def _drop_entry(self, ck: tuple[str, str]) -> None:
        with self._lock:
            entry = self._index.pop(ck, None)
            if entry is not None:
                self._by_file.pop(entry.file_id, None)

    def _forget_file(self, file_id: str) -> None:
        with self._lock:
            ck = self._by_file.pop(file_id, None)
            entry = self._index.get(ck) if ck is not None else None
            if entry is not None and entry.file_id == file_id:
                del self._index[entry.channel_id, entry.key]

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
        for entry in entries:
            self._remember(entry)
        with self._lock:
            self._loaded.add(channel.id)
        return entries

    def _find(self, channel: _Channel, key: str) -> list[_Entry]:
        """Look a key up in one channel with a parent-scoped query (never name-only)."""
        q = (
            f"'{channel.id}' in parents and name = '{escape_query_value(key)}' "
            "and trashed = false"
        )
        try:
            files = self._list_all(q, "find file")
        except MessageNotFound:
            self._forget_channel(channel.id)
            return []
        entries = [
            e for e in (self._entry_for(channel, f) for f in files) if e is not None
        ]
        entries.sort(key=lambda e: e.modified, reverse=True)
        for entry in entries:
            self._remember(entry)
        return entries

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

    def _read_channels(self, other: str, *, discover: bool) -> list[_Channel]:
        """My ``me -> other`` channel first, then the peer's ``other -> me`` ones."""
        self._ensure_root()
        if (
            discover
            and other != self.identity
            and not [c for c in self._incoming(other) if c.reader == self.identity]
        ):
            # No message channel from this peer yet (its public one does not count).
            self._discover(peer=other)
        with self._lock:
            mine = [
                c
                for c in self._channels.values()
                if c.writer == self.identity and c.reader == other
            ]
        return mine + self._incoming(other)

    def _channels_for_key(self, key: str, other: str) -> list[_Channel]:
        """The channels that may hold ``key``: those whose parties are the key's."""
        parties = frozenset(key_parties(key))
        channels = [
            c for c in self._read_channels(other, discover=True) if c.parties == parties
        ]
        if not channels and other != self.identity and parties == {other}:
            # A peer's public channel we have not met yet (rate-limited search).
            self._discover(peer=other)
            channels = [c for c in self._incoming(other) if c.parties == parties]
        return channels

    def _incoming(self, other: str) -> list[_Channel]:
        if other == self.identity:
            return []
        with self._lock:
            return [
                c
                for c in self._channels.values()
                if c.writer == other and c.reader in (self.identity, other)
            ]

    def get(self, key: str) -> bytes:
        """Return the bytes under ``key`` (mine first, then the peer's copy).

        Raises
        ------
        MessageNotFound
            If neither channel holds the key (yet).
        """
        self._check_open()
        check_key(key)
        try:
            _, other = self._parties_for(key, read=True)
        except PermissionDenied:
            raise MessageNotFound(key) from None
        for entry in self._candidates(key, other):
            try:
                return self._download(entry)
            except MessageNotFound:
                self._forget_file(entry.file_id)
        raise MessageNotFound(key)

    def _candidates(self, key: str, other: str) -> Iterable[_Entry]:
        """Yield the entries of ``key``: indexed ones, then fresh parent-scoped lookups."""
        channels = self._channels_for_key(key, other)
        with self._lock:
            cached = [self._index.get((c.id, key)) for c in channels]
        tried: set[str] = set()
        for entry in cached:
            if entry is not None:
                tried.add(entry.file_id)
                yield entry
        for channel in channels:
            with self._lock:
                authoritative = (
                    channel.writer == self.identity and channel.id in self._loaded
                )
            if authoritative:
                continue  # only I write there, and the index has all of it
            for entry in self._find(channel, key):
                if entry.file_id not in tried:
                    tried.add(entry.file_id)
                    yield entry
                    break

    def _download(self, entry: _Entry) -> bytes:
        from googleapiclient.http import MediaIoBaseDownload

        for _ in range(3):
            buf = io.BytesIO()
            request = self._svc().files().get_media(fileId=entry.file_id)
            loader = MediaIoBaseDownload(buf, request, chunksize=self._chunk_size)
            done = False
            while not done:
                _, done = self._call(loader.next_chunk, "download")
            data = buf.getvalue()
            md5 = hashlib.md5(data).hexdigest()
            if entry.md5 is None or md5 == entry.md5:
                return data
            # The file was replaced since we listed it, or replaced between two
            # chunks of this download: check what Drive holds now.
            meta = self._execute(
                lambda s, fid=entry.file_id: s.files().get(
                    fileId=fid, fields=FILE_FIELDS
                ),
                "get file",
            )
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

        My own files are answered from the index without a call (only this
        identity can delete them); a peer's indexed file is confirmed with one
        ``files.get`` by id, which, unlike search, is strongly consistent.
        """
        self._check_open()
        check_key(key)
        try:
            _, other = self._parties_for(key, read=True)
        except PermissionDenied:
            return False
        channels = self._channels_for_key(key, other)
        with self._lock:
            cached = [self._index.get((c.id, key)) for c in channels]
        for channel, entry in zip(channels, cached, strict=True):
            if entry is None:
                continue
            if channel.writer == self.identity or self._still_there(entry):
                return True
        return any(self._find(c, key) for c in channels)

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

        Lists each relevant channel afresh (parent-scoped, all pages), so a file a
        peer has just written is included even before the poller sees it.
        """
        self._check_open()
        prefix = prefix.strip("/")
        if prefix:
            check_key(prefix)
        owner = prefix.split("/", 1)[0].lower() if prefix else None
        self._ensure_root()
        self._discover()
        with self._lock:
            channels = [
                c
                for c in self._channels.values()
                if owner is None or owner in c.parties
            ]
        keys: set[str] = set()
        for channel in channels:
            for entry in self._list_channel(channel):
                if (
                    not prefix
                    or entry.key == prefix
                    or entry.key.startswith(prefix + "/")
                ):
                    keys.add(entry.key)
        return sorted(keys)
