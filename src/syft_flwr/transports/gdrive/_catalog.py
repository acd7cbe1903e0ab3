"""What this transport knows of Drive, in memory: its channels and their files.

The catalog holds the channels (channel folders and shared blob folders) this
identity reads or writes, which of them have been listed in full, and the
index ``{(channel id, key): file}``. It does no I/O: the folder, feed and read
collaborators fill it and ask it; its one lock is never held over a call.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from typing import Any

from syft_flwr.transports.gdrive._layout import _Channel, _Entry

__all__ = ["Catalog"]

CKey = tuple[str, str]  # (channel id, key)


class Catalog:
    """Channels, listing status and the file index of one identity.

    Parameters
    ----------
    identity:
        This transport's email: its own channels are its write channels.
    """

    def __init__(self, identity: str) -> None:
        self._identity = identity
        self._lock = threading.RLock()
        self._channels: dict[str, _Channel] = {}  # folder id -> channel
        self._write_ids: dict[str, str] = {}  # reader -> my channel folder id
        self._loaded: set[str] = set()  # channel ids whose listing is in the index
        self._index: dict[CKey, _Entry] = {}
        self._by_file: dict[str, CKey] = {}  # file id -> (channel id, key)

    # -- channels --------------------------------------------------------------------
    def register(self, channel: _Channel) -> bool:
        """Remember a channel; returns True if it was new."""
        with self._lock:
            if channel.id in self._channels:
                return False
            self._channels[channel.id] = channel
            if channel.writer == self._identity and channel.shared is None:
                self._write_ids.setdefault(channel.reader, channel.id)
            return True

    def forget_channel(self, channel_id: str) -> None:
        """Forget a channel (its folder is gone) and every file indexed in it."""
        with self._lock:
            channel = self._channels.pop(channel_id, None)
            if channel and self._write_ids.get(channel.reader) == channel_id:
                del self._write_ids[channel.reader]
            for ck in [ck for ck in self._index if ck[0] == channel_id]:
                self.drop_entry(ck)
            self._loaded.discard(channel_id)

    def channel(self, channel_id: str) -> _Channel | None:
        with self._lock:
            return self._channels.get(channel_id)

    def channels(self) -> list[_Channel]:
        with self._lock:
            return list(self._channels.values())

    def unloaded_channels(self) -> list[_Channel]:
        """Channels whose files have not been listed yet."""
        with self._lock:
            return [c for c in self._channels.values() if c.id not in self._loaded]

    def write_id(self, reader: str) -> str | None:
        """The id of my channel folder to ``reader``, if known."""
        with self._lock:
            return self._write_ids.get(reader)

    def readers(self) -> set[str]:
        """The readers I have a channel folder to."""
        with self._lock:
            return set(self._write_ids)

    def is_loaded(self, channel_id: str) -> bool:
        with self._lock:
            return channel_id in self._loaded

    def mark_loaded(self, channel_ids: Iterable[str]) -> None:
        """Record that the index holds every file of these channels."""
        with self._lock:
            self._loaded.update(channel_ids)

    def mine_to(self, other: str) -> list[_Channel]:
        """My (non-shared) channels whose reader is ``other``."""
        with self._lock:
            return [
                c
                for c in self._channels.values()
                if c.writer == self._identity and c.reader == other and c.shared is None
            ]

    def incoming(self, other: str) -> list[_Channel]:
        """``other``'s channels that I read: to me, or its public one."""
        if other == self._identity:
            return []
        with self._lock:
            return [
                c
                for c in self._channels.values()
                if c.writer == other
                and c.reader in (self._identity, other)
                and c.shared is None
            ]

    def shared_id(self, folder_key: str, owner: str) -> str | None:
        """The id of ``owner``'s shared folder ``folder_key``, if known."""
        with self._lock:
            for c in self._channels.values():
                if c.shared == folder_key and c.writer == owner:
                    return c.id
        return None

    def has_shared(self, folder_key: str) -> bool:
        with self._lock:
            return any(c.shared == folder_key for c in self._channels.values())

    def my_shared_under(self, base: str) -> list[str]:
        """Folder keys of my shared folders directly under ``base`` (ends in ``/``)."""
        with self._lock:
            return sorted(
                c.shared
                for c in self._channels.values()
                if c.shared is not None
                and c.writer == self._identity
                and c.shared.startswith(base)
                and "/" not in c.shared[len(base) :]
            )

    # -- index -----------------------------------------------------------------------
    def entry(self, channel_id: str, key: str) -> _Entry | None:
        with self._lock:
            return self._index.get((channel_id, key))

    def view(
        self, channel_id: str, key: str
    ) -> tuple[_Channel | None, bool, _Entry | None]:
        """``(channel, listed?, entry of key)`` read together."""
        with self._lock:
            return (
                self._channels.get(channel_id),
                channel_id in self._loaded,
                self._index.get((channel_id, key)),
            )

    def lookup(
        self, channels: Sequence[_Channel], key: str
    ) -> tuple[_Channel | None, list[_Entry | None]]:
        """The first of ``channels`` not listed yet, and ``key``'s entry in each."""
        with self._lock:
            unloaded = next((c for c in channels if c.id not in self._loaded), None)
            return unloaded, [self._index.get((ch.id, key)) for ch in channels]

    def entries_of(self, channel_id: str) -> list[_Entry]:
        with self._lock:
            return [e for ck, e in self._index.items() if ck[0] == channel_id]

    def holds_files(self, channel_id: str) -> bool:
        with self._lock:
            return any(c == channel_id for c, _ in self._index)

    def key_of(self, file_id: str) -> CKey | None:
        with self._lock:
            return self._by_file.get(file_id)

    def remember(self, entry: _Entry) -> _Entry | None:
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
        return old if old is not None and old.file_id != entry.file_id else None

    def drop_entry(self, ck: CKey) -> None:
        with self._lock:
            entry = self._index.pop(ck, None)
            if entry is not None:
                self._by_file.pop(entry.file_id, None)

    def forget_file(self, file_id: str) -> None:
        with self._lock:
            ck = self._by_file.pop(file_id, None)
            entry = self._index.get(ck) if ck is not None else None
            if entry is not None and entry.file_id == file_id:
                del self._index[entry.channel_id, entry.key]

    def drop_vanished(
        self, channel_id: str, listed: set[str], before: dict[CKey, str]
    ) -> None:
        """Drop entries of ``before`` (taken before a listing) not in ``listed``.

        Entries a concurrent put added meanwhile are kept.
        """
        with self._lock:
            for ck, fid in before.items():
                entry = self._index.get(ck)
                if fid not in listed and entry is not None and entry.file_id == fid:
                    self.drop_entry(ck)

    def file_ids_in(self, channel_id: str) -> dict[CKey, str]:
        with self._lock:
            return {
                ck: e.file_id for ck, e in self._index.items() if ck[0] == channel_id
            }

    def markers(self) -> dict[CKey, tuple[str, str, str | None]]:
        """What every indexed file looks like now (a watch's baseline)."""
        with self._lock:
            return {ck: e.marker for ck, e in self._index.items()}

    def snapshot(
        self,
    ) -> tuple[dict[str, list[str]], dict[str, list[str]], dict[str, list[Any]]]:
        """The listed channels, shared folders and their files, as saved."""
        with self._lock:
            channels = {
                cid: [c.writer, c.reader]
                for cid, c in self._channels.items()
                if cid in self._loaded and c.shared is None
            }
            shared = {
                cid: [c.writer, str(c.shared)]
                for cid, c in self._channels.items()
                if cid in self._loaded and c.shared is not None
            }
            index = {
                e.file_id: [e.channel_id, e.key, e.md5, e.size, e.modified]
                for ck, e in self._index.items()
                if ck[0] in self._loaded
            }
        return channels, shared, index
