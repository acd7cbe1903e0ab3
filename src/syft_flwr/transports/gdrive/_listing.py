"""Listing a channel into the catalog, and which files a channel may hold."""

from __future__ import annotations

from typing import Any

from syft_flwr.errors import ConfigError, MessageNotFound, PermissionDenied
from syft_flwr.transports.gdrive._api import DriveApi
from syft_flwr.transports.gdrive._catalog import Catalog
from syft_flwr.transports.gdrive._layout import (
    FOLDER_MIME,
    _Channel,
    _Entry,
    file_owner,
    key_parties,
    make_entry,
    shared_folder_of,
)

__all__ = ["ChannelLister"]


def entry_for(channel: _Channel, f: dict[str, Any]) -> _Entry | None:
    """Return an index entry for file ``f`` of ``channel`` if it is acceptable."""
    if f.get("mimeType") == FOLDER_MIME or f.get("trashed"):
        return None
    key = str(f.get("name", ""))
    if file_owner(f) != channel.writer:
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
    return make_entry(
        channel,
        str(f["id"]),
        key,
        f.get("md5Checksum"),
        f.get("size"),
        str(f.get("modifiedTime", "")),
    )


class ChannelLister:
    """Lists channels into the catalog and deletes this identity's files."""

    def __init__(self, identity: str, api: DriveApi, catalog: Catalog) -> None:
        self._identity = identity
        self._api = api
        self._catalog = catalog

    def list_channel(self, channel: _Channel) -> list[_Entry]:
        """List every acceptable file of a channel (parent-scoped, all pages)."""
        q = f"'{channel.id}' in parents and trashed = false"
        before = self._catalog.file_ids_in(channel.id)
        try:
            files = self._api.list_all(q, "list channel")
        except MessageNotFound:
            self._catalog.forget_channel(channel.id)
            return []
        entries = [e for e in (entry_for(channel, f) for f in files) if e is not None]
        self._catalog.drop_vanished(channel.id, {e.file_id for e in entries}, before)
        duplicates = [d for d in map(self._catalog.remember, entries) if d is not None]
        self._catalog.mark_loaded([channel.id])
        if channel.writer == self._identity:
            for dup in duplicates:  # mine: only I can delete them
                self.delete_file(dup.file_id)
        return [e for e in entries if e not in duplicates]

    def delete_file(self, file_id: str) -> None:
        """Delete one of my files by id and forget it (gone already is fine)."""
        try:
            self._api.execute(lambda s: s.files().delete(fileId=file_id), "delete")
        except (MessageNotFound, PermissionDenied):
            pass  # already gone, or not ours to delete
        self._catalog.forget_file(file_id)
