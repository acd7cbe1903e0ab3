"""Writes: uploads into this identity's channel and shared folders, deletes.

Uploads go to files created with ids reserved beforehand (exactly once); a
key is written by one thread at a time (64 striped locks).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable
from typing import Any

from syft_flwr.errors import (
    MessageNotFound,
    PermissionDenied,
    RemoteServiceError,
    TransportError,
)
from syft_flwr.transports.base import HEARTBEAT_NAME, check_key
from syft_flwr.transports.gdrive._api import (
    FILE_FIELDS,
    SIMPLE_UPLOAD_LIMIT,
    DriveApi,
    bytes_upload,
)
from syft_flwr.transports.gdrive._catalog import Catalog
from syft_flwr.transports.gdrive._changes import ChangesFeed
from syft_flwr.transports.gdrive._folders import Folders
from syft_flwr.transports.gdrive._layout import Peers, shared_folder_of
from syft_flwr.transports.gdrive._listing import ChannelLister, entry_for
from syft_flwr.transports.gdrive._shared import SharedFolders

__all__ = ["Writer"]


def _is_heartbeat(key: str) -> bool:
    return key.rsplit("/", 1)[-1] == HEARTBEAT_NAME


class Writer:
    """Puts and deletes of this identity's files."""

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
        self._key_locks = [threading.Lock() for _ in range(64)]

    def put(self, key: str, data: bytes) -> None:
        """Upload ``data`` under ``key`` (see :meth:`GDriveTransport.put`)."""
        folder_key = shared_folder_of(check_key(key))
        if folder_key is not None:
            self._put_shared(key, folder_key, bytes(data))
            return
        _, other = self._peers.parties_for(key)
        if not self._peers.allows(other):
            raise PermissionDenied(f"{other} is not an allowed peer")
        data = bytes(data)
        with self._key_locks[hash(key) % len(self._key_locks)]:
            for attempt in range(2):
                cid = self._folders.write_channel(other, create=True)
                assert cid is not None
                try:
                    self._put_in(cid, key, data)
                    break
                except MessageNotFound:
                    if attempt:
                        raise
                    # The saved channel folder is gone: forget it, rescan, recreate.
                    self._catalog.forget_channel(cid)
                    self._folders.forget_root()
        if not _is_heartbeat(key):  # a beat is not work: polling stays slow
            self._feed.note_activity()

    def _put_shared(self, key: str, folder_key: str, data: bytes) -> None:
        """Upload into my shared blob folder (created unshared if :meth:`share`
        did not make it first)."""
        if folder_key.split("/", 1)[0] != self.identity:
            raise PermissionDenied(f"{key!r} is in another datasite's shared folder")
        with self._key_locks[hash(key) % len(self._key_locks)]:
            cid = self._shared.folder_id(folder_key, create=True)
            assert cid is not None
            try:
                self._put_in(cid, key, data)
            except MessageNotFound:
                # Deleted behind our back: its readers are gone with it, so a
                # new folder would not reach them. Forget it and fail loudly.
                self._catalog.forget_channel(cid)
                raise
            except TransportError:
                # The caller falls back to a copy per request: a folder still
                # empty would never be listed, hence never swept. Remove it.
                self._shared.drop_if_empty(cid)
                raise
        self._feed.note_activity()

    def _put_in(self, cid: str, key: str, data: bytes) -> None:
        channel, loaded, entry = self._catalog.view(cid, key)
        if channel is None:  # forgotten meanwhile (its folder was removed)
            raise MessageNotFound(f"channel folder {cid} is gone")
        if entry is None and not loaded:
            # Once per channel: afterwards my own index is authoritative for it.
            self._lister.list_channel(channel)
            entry = self._catalog.entry(cid, key)
        result: dict[str, Any] | None = None
        if entry is not None:
            try:
                result = self._upload(data, key, cid, file_id=entry.file_id)
            except MessageNotFound:
                self._catalog.drop_entry(
                    (cid, key)
                )  # deleted behind our back: create anew
        if result is None:
            result = self._upload(data, key, cid, file_id=None)
        if result.get("md5Checksum") not in (None, hashlib.md5(data).hexdigest()):
            raise RemoteServiceError(f"upload of {key!r} was corrupted (md5 mismatch)")
        new = entry_for(channel, result)
        if new is not None:
            self._catalog.remember(new)

    def _upload(
        self, data: bytes, key: str, cid: str, *, file_id: str | None
    ) -> dict[str, Any]:
        resumable = len(data) > SIMPLE_UPLOAD_LIMIT
        media = bytes_upload(data, self._chunk_size, resumable=resumable)
        body: dict[str, Any] = {}
        if file_id is None:
            body = {
                "id": self._api.new_id(),
                "name": key,
                "parents": [cid],
                "mimeType": "application/octet-stream",
            }
        if not resumable:
            if file_id is None:
                return self._api.create(body, "upload", media)
            return dict(
                self._api.call(
                    lambda: (
                        self._api.svc()
                        .files()
                        .update(fileId=file_id, media_body=media, fields=FILE_FIELDS)
                        .execute()
                    ),
                    "upload",
                )
            )
        # Resumable: the session URL survives failures, so each chunk is retried on
        # its own; a repeated session for the same id ends in 409, not a 2nd file.
        svc = self._api.svc()
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
                _, response = self._api.call(
                    request.next_chunk, "resumable upload", resumable=True
                )
        except RemoteServiceError as exc:
            if exc.status != 409 or file_id is not None:
                raise
            return self._api.get_meta(str(body["id"]))
        return dict(response)

    def delete(self, key: str) -> None:
        """Delete my file under ``key``; a peer's is left alone."""
        check_key(key)
        if shared_folder_of(key) is not None:
            self.delete_many([key])  # the folder goes with its last file
            return
        try:
            _, other = self._peers.parties_for(key)
        except PermissionDenied:
            return
        for file_id in self._my_file_ids(key, other):
            self._lister.delete_file(file_id)

    def _my_file_ids(self, key: str, other: str) -> list[str]:
        cid = self._folders.write_channel(other, create=False)
        if cid is None:
            return []
        channel, loaded, entry = self._catalog.view(cid, key)
        if entry is not None:
            return [entry.file_id]
        if channel is None or loaded:
            return []  # only I write there, and the index has all of it
        return [e.file_id for e in self._lister.list_channel(channel) if e.key == key]

    def delete_many(self, keys: Iterable[str]) -> None:
        """Delete several of this identity's keys with batched ``files.delete`` calls."""
        targets: list[tuple[str, str]] = []
        shared: dict[str, set[str]] = {}  # my shared folder id -> keys to delete
        for key in keys:
            check_key(key)
            folder_key = shared_folder_of(key)
            if folder_key is not None:
                cid = self._shared.my_folder_id(folder_key)
                if cid is not None:
                    shared.setdefault(cid, set()).add(key)
                continue
            try:
                _, other = self._peers.parties_for(key)
            except PermissionDenied:
                continue
            targets += [(fid, key) for fid in self._my_file_ids(key, other)]
        for cid, doomed in shared.items():
            targets += self._shared.delete_keys(cid, doomed)
        for start in range(0, len(targets), 100):  # Drive's per-batch cap
            batch = targets[start : start + 100]
            failed = self._api.delete_batch(batch, self._catalog.forget_file)
            for fid, _ in failed:  # throttled parts: one by one with backoff
                self._lister.delete_file(fid)
