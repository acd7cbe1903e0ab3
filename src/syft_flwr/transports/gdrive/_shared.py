"""Shared blob folders: one Drive folder per group, read by the readers named.

Mine are created (with an id reserved beforehand, like every folder) and
shared here, and deleted with their last file; a peer's is taken only when its
name re-parses to the key's folder and Drive says the peer owns it, learnt
from the changes feed or, at most every 10 s per folder, a search by exact
name and owner.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

from syft_flwr.errors import (
    ConfigError,
    MessageNotFound,
    PermissionDenied,
    TransportError,
)
from syft_flwr.transports.gdrive._api import DriveApi
from syft_flwr.transports.gdrive._catalog import Catalog
from syft_flwr.transports.gdrive._folders import Folders
from syft_flwr.transports.gdrive._layout import (
    FOLDER_MIME,
    Peers,
    _Channel,
    escape_query_value,
    parse_shared_folder_key,
    shared_folder_name,
)
from syft_flwr.transports.gdrive._listing import ChannelLister
from syft_flwr.transports.gdrive._state import Bookmarks

__all__ = ["SharedFolders"]

logger = logging.getLogger("syft_flwr.transports.gdrive")

#: Least seconds between two name searches for the same peer's shared folder.
_SHARED_SEARCH_EVERY = 10.0


class SharedFolders:
    """This identity's shared blob folders, and the peers' it has found.

    ``sync_for`` is the changes feed's "make the index current enough for this
    question" (a new share arrives in the feed).
    """

    def __init__(
        self,
        peers: Peers,
        api: DriveApi,
        catalog: Catalog,
        bookmarks: Bookmarks,
        folders: Folders,
        lister: ChannelLister,
        *,
        sync_for: Callable[[str], None],
        clock: Callable[[], float],
    ) -> None:
        self.identity = peers.identity
        self._peers = peers
        self._api = api
        self._catalog = catalog
        self._bookmarks = bookmarks
        self._folders = folders
        self._lister = lister
        self._sync_for = sync_for
        self._clock = clock
        self._create_lock = threading.Lock()  # serializes creating my folders
        self._lock = threading.Lock()  # guards _searched; never held over I/O
        self._searched: dict[str, float] = {}  # folder key -> last search

    def share(self, folder: str, readers: Sequence[str]) -> None:
        """Create my shared folder ``folder``, readable by ``readers`` only."""
        parsed = parse_shared_folder_key(folder.strip("/"))
        if parsed is None:
            raise ConfigError(
                f"not a shared folder key (<me>/app_data/<app>/blobs/<group>): "
                f"{folder!r}"
            )
        if parsed[0] != self.identity:
            raise PermissionDenied(f"{folder!r} is not in {self.identity}'s datasite")
        emails = sorted({r.strip().lower() for r in readers} - {self.identity})
        for email in emails:
            if not self._peers.allows(email):
                raise PermissionDenied(f"{email} is not an allowed peer")
        folder_key = "{}/app_data/{}/blobs/{}".format(*parsed)
        existed = self._catalog.has_shared(folder_key)
        cid = self.folder_id(folder_key, create=True)
        assert cid is not None
        try:
            for email in emails:
                self._folders.grant(cid, email, what="share blob folder")
        except Exception:
            if not existed:  # nothing was written yet: leave no empty folder behind
                self.drop_if_empty(cid)
            raise

    def shared_folders(self, prefix: str) -> list[str]:
        """My shared folders under ``prefix``, empty ones included (from my channels)."""
        base = prefix.strip("/") + "/"
        return self._catalog.my_shared_under(base)

    def unshare(self, folder: str) -> None:
        """Delete my shared folder ``folder``, its files and permissions."""
        cid = self.my_folder_id(folder.strip("/"))
        if cid is not None:
            self.delete_folder(cid)

    def delete_folder(self, cid: str) -> None:
        """Delete my folder ``cid`` with what it holds, and forget it."""
        try:
            self._api.execute(lambda s: s.files().delete(fileId=cid), "delete folder")
        except (MessageNotFound, PermissionDenied):
            pass  # already gone
        self._catalog.forget_channel(cid)
        self._bookmarks.save()

    def drop_if_empty(self, cid: str) -> None:
        """Delete my shared folder ``cid`` if I hold no file in it (best effort).

        An empty shared folder is never listed, so nothing would sweep it.
        """
        loaded = self._catalog.is_loaded(cid)
        held = self._catalog.holds_files(cid)
        if not loaded or held:
            return
        try:
            self._api.execute(lambda s: s.files().delete(fileId=cid), "delete folder")
        except TransportError:
            logger.warning("could not remove the empty blob folder %s", cid)
            return
        self._catalog.forget_channel(cid)
        self._bookmarks.save()

    def folder_id(self, folder_key: str, *, create: bool = False) -> str | None:
        """Return the id of the shared folder ``folder_key`` I may read, if known.

        My own are known from their creation (or the first start's listing) and
        created here if asked. A peer's is taken only when its name parses to
        ``folder_key`` and Drive says the peer owns it: first from what the
        changes feed reported, then one feed poll, then (at most every 10 s per
        folder) a search by exact name and owner.
        """
        self._folders.ensure_root()
        owner = folder_key.split("/", 1)[0]

        def known() -> str | None:
            return self._catalog.shared_id(folder_key, owner)

        cid = known()
        if cid is not None:
            return cid
        if owner == self.identity:
            if not create:
                return None  # only I create my shared folders: none exists
            with self._create_lock:
                cid = known()
                if cid is not None:
                    return cid
                _, app, group = parse_shared_folder_key(folder_key) or ("", "", "")
                cid = self._folders.create_folder(
                    shared_folder_name(owner, app, group),
                    self._folders.ensure_root(),
                    f"shared:{folder_key}",
                )
                self._catalog.mark_loaded([cid])  # new and empty: index complete
                self._catalog.register(_Channel(cid, owner, owner, folder_key))
                self._bookmarks.save()
            return cid
        if not self._peers.allows(owner):
            return None
        self._sync_for(f"shared:{folder_key}")  # a new share arrives in the feed
        cid = known()
        if cid is None:
            cid = self.search(folder_key)
        return cid

    def search(self, folder_key: str) -> str | None:
        """Find a peer's shared folder by exact name and owner (rate limited)."""
        now = self._clock()
        with self._lock:
            last = self._searched.get(folder_key)
            if last is not None and now - last < _SHARED_SEARCH_EVERY:
                return None
            self._searched[folder_key] = now
            while len(self._searched) > 1000:
                del self._searched[next(iter(self._searched))]
        parsed = parse_shared_folder_key(folder_key)
        assert parsed is not None
        owner = parsed[0]
        q = (
            f"name = '{escape_query_value(shared_folder_name(*parsed))}' and "
            f"'{escape_query_value(owner)}' in owners and "
            f"mimeType = '{FOLDER_MIME}' and trashed = false"
        )
        found = [
            c
            for c in map(
                self._folders.as_incoming_channel,
                self._api.list_all(q, "find blob folder"),
            )
            if c is not None and c.shared == folder_key and c.writer == owner
        ]
        if not found:
            return None
        channel = found[0]  # oldest first (the listing is ordered by createdTime)
        if self._catalog.register(channel):
            self._lister.list_channel(channel)
            self._bookmarks.save()
        return self._catalog.shared_id(folder_key, owner)

    def my_folder_id(self, folder_key: str) -> str | None:
        """The id of my shared folder ``folder_key``; ``None`` for a peer's."""
        if folder_key.split("/", 1)[0] != self.identity:
            return None  # only its owner deletes a shared folder's files
        return self.folder_id(folder_key)

    def delete_keys(self, cid: str, doomed: set[str]) -> list[tuple[str, str]]:
        """Delete ``doomed`` keys of my shared folder ``cid``.

        When they are all it holds (my index of it is complete: only I write
        there), the folder itself goes, with one ``files.delete``; its readers'
        access goes with it. Otherwise returns the files to delete one by one.
        """
        channel = self._catalog.channel(cid)
        if channel is None:
            return []
        if not self._catalog.is_loaded(cid):
            self._lister.list_channel(channel)
        held = {k: fid for (_, k), fid in self._catalog.file_ids_in(cid).items()}
        if set(held) <= doomed:
            self.delete_folder(cid)
            return []
        return [(held[k], k) for k in sorted(doomed) if k in held]
