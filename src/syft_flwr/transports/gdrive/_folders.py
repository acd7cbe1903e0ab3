"""Folders: this identity's root, its channel folders, sharing, discovery.

Folders are found by id. Their ids live in the party's private state, so after
the first start nothing is looked up by name; the first start lists parents
(``'<id>' in parents``, never a name term, because Drive's name index lags) and
takes the oldest of same-named folders, moving what older versions put into
duplicates over to it. New folders are created with ids reserved beforehand and
saved first, so a crash or a lost response never makes a second one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from syft_flwr.errors import ConfigError, MessageNotFound, PermissionDenied
from syft_flwr.transports.gdrive._api import DriveApi
from syft_flwr.transports.gdrive._catalog import Catalog
from syft_flwr.transports.gdrive._layout import (
    FOLDER_MIME,
    Peers,
    _Channel,
    channel_folder_name,
    file_owner,
    make_entry,
    parse_channel_folder_name,
    parse_shared_folder_name,
)
from syft_flwr.transports.gdrive._listing import ChannelLister
from syft_flwr.transports.gdrive._state import Bookmarks, DriveState

__all__ = ["READER_ROLE", "Folders"]

logger = logging.getLogger("syft_flwr.transports.gdrive")

#: Role a reader gets on a channel folder: reading is all it needs, because
#: every file lives in its writer's channel and only owners delete.
READER_ROLE = "reader"


class Folders:
    """This identity's root and channel folders, their sharing, and discovery.

    Owns the start-up (finding or creating the root, restoring the saved
    state), folder creation (serialized by its own lock) and the search for
    folders shared with this identity. Channels it finds go to the catalog.
    """

    def __init__(
        self,
        peers: Peers,
        api: DriveApi,
        catalog: Catalog,
        bookmarks: Bookmarks,
        lister: ChannelLister,
        *,
        root_name: str,
        clock: Callable[[], float],
        discovery_interval: float,
    ) -> None:
        self.identity = peers.identity
        self._peers = peers
        self._api = api
        self._catalog = catalog
        self._bookmarks = bookmarks
        self._lister = lister
        self._root_name = root_name
        self._clock = clock
        self._discovery_every = discovery_interval
        self._lock = threading.Lock()  # guards the fields below; never over I/O
        self._setup_lock = threading.RLock()  # serializes folder creation
        self._verified = False
        self._rescan = False  # the saved state proved stale: start afresh
        self._share_checked: set[str] = set()  # peers whose sharing prepare() fixed
        self._public_shared: set[tuple[str, str]] = set()  # (public cid, peer)
        self._last_discovery: float | None = None

    def verify_identity(self) -> None:
        """Check that the Drive account behind the service is ``identity``."""
        about = self._api.execute(
            lambda s: s.about().get(fields="user(emailAddress)"), "about.get"
        )
        actual = str(about.get("user", {}).get("emailAddress", "")).lower()
        if actual != self.identity:
            raise ConfigError(
                f"the Drive credentials belong to {actual!r}, not to {self.identity!r}"
            )
        with self._lock:
            self._verified = True

    # -- start-up ----------------------------------------------------------------------
    def ensure_root(self) -> str:
        root_id = self._bookmarks.root_id
        if root_id is not None:
            return root_id
        with self._setup_lock:
            root_id = self._bookmarks.root_id
            if root_id is not None:
                return root_id
            with self._lock:
                verified, rescan = self._verified, self._rescan
            if not verified:
                self.verify_identity()
            saved = self._bookmarks.load()
            if saved.root_id and saved.page_token and not rescan:
                self._restore(saved)
            else:
                self._first_start()
                with self._lock:
                    self._rescan = False
            self._bookmarks.save()
            root_id = self._bookmarks.root_id
            assert root_id is not None
            return root_id

    def forget_root(self) -> None:
        """The saved root or channel proved gone: find everything afresh."""
        with self._lock:
            self._rescan = True
        self._bookmarks.set_root(None)

    def _restore(self, saved: DriveState) -> None:
        """Resume from the saved state: no search, no listing."""
        for cid, (writer, reader) in saved.channels.items():
            self._catalog.register(_Channel(cid, writer, reader))
        for cid, (owner, folder_key) in saved.shared.items():
            self._catalog.register(_Channel(cid, owner, owner, shared=folder_key))
        self._catalog.mark_loaded(saved.channels)
        self._catalog.mark_loaded(saved.shared)
        self._bookmarks.set_page_token(saved.page_token)
        for fid, (cid, key, md5, size, modified) in saved.index.items():
            channel = self._catalog.channel(cid)
            if channel is not None:
                self._catalog.remember(
                    make_entry(channel, fid, key, md5, size, modified)
                )
        self._bookmarks.set_root(saved.root_id)

    def _first_start(self) -> None:
        # The token first: every change after it is in the feed, so the scans
        # below plus the feed miss nothing.
        token = self._api.execute(
            lambda s: s.changes().getStartPageToken(), "changes.getStartPageToken"
        )["startPageToken"]
        root_id = self._find_or_create_root()
        self._bookmarks.set_root(root_id)
        self._load_my_channels(root_id)
        self.discover(force=True)
        for channel in self._catalog.unloaded_channels():
            self._lister.list_channel(channel)
        self._bookmarks.set_page_token(str(token))

    def _find_or_create_root(self) -> str:
        reserved = self._bookmarks.reserved("root")
        if reserved is not None and self._exists_by_id(reserved):
            return reserved
        # A parent query without a name term: consistent, unlike name search.
        q = f"'root' in parents and mimeType = '{FOLDER_MIME}' and trashed = false"
        found = [
            f
            for f in self._api.list_all(q, "list my top-level folders")
            if f.get("name") == self._root_name and self._owned_by_me(f)
        ]
        if found:
            return self._keep_oldest(found)
        return self.create_folder(self._root_name, None, "root")

    def _exists_by_id(self, file_id: str) -> bool:
        try:
            meta = self._api.get_meta(file_id, "get folder")
        except (MessageNotFound, PermissionDenied):
            return False
        return not meta.get("trashed")

    def _keep_oldest(self, same: list[dict[str, Any]]) -> str:
        """Return the oldest of same-named folders; merge the others into it."""
        same = sorted(same, key=lambda f: (f.get("createdTime", ""), f["id"]))
        keep = str(same[0]["id"])
        for dup in same[1:]:
            self._merge_folder(str(dup["id"]), keep)
        return keep

    def _merge_folder(self, dup: str, keep: str) -> None:
        """Move my files from ``dup`` (made twice by an older version) into ``keep``."""
        logger.info("merging duplicate Drive folder %s into %s", dup, keep)
        for f in self._api.list_all(f"'{dup}' in parents and trashed = false", "list"):
            if self._owned_by_me(f):
                self._api.execute(
                    lambda s, fid=f["id"]: s.files().update(
                        fileId=fid, addParents=keep, removeParents=dup, fields="id"
                    ),
                    "move into the kept folder",
                )
        try:
            self._api.execute(
                lambda s: s.files().delete(fileId=dup), "delete duplicate"
            )
        except (MessageNotFound, PermissionDenied):
            pass

    def _owned_by_me(self, f: dict[str, Any]) -> bool:
        return file_owner(f) == self.identity

    def _reserve(self, slot: str) -> str:
        """Return the id reserved for ``slot``, reserving and saving one if needed."""
        fid = self._bookmarks.reserved(slot)
        if fid is None:
            fid = self._api.new_id()
            self._bookmarks.reserve(slot, fid)
            self._bookmarks.save()  # durable before the create that uses it
        return fid

    def create_folder(self, name: str, parent: str | None, slot: str) -> str:
        body: dict[str, Any] = {
            "id": self._reserve(slot),
            "name": name,
            "mimeType": FOLDER_MIME,
        }
        if parent:
            body["parents"] = [parent]
        created = self._api.create(body, "create folder")
        self._bookmarks.release(slot)
        return str(created["id"])

    def _load_my_channels(self, root_id: str) -> None:
        q = f"'{root_id}' in parents and mimeType = '{FOLDER_MIME}' and trashed = false"
        by_name: dict[tuple[str, str], list[dict[str, Any]]] = {}
        shared: dict[str, list[dict[str, Any]]] = {}
        for f in self._api.list_all(q, "list my channels"):
            name = f.get("name", "")
            parsed = parse_channel_folder_name(name)
            if parsed and parsed[0] == self.identity and self._owned_by_me(f):
                by_name.setdefault(parsed, []).append(f)
            mine = parse_shared_folder_name(name)
            if mine and mine[0] == self.identity and self._owned_by_me(f):
                shared.setdefault(mine[1], []).append(f)
        for (writer, reader), same in by_name.items():
            self._catalog.register(_Channel(self._keep_oldest(same), writer, reader))
        for folder_key, same in shared.items():
            cid = self._keep_oldest(same)
            self._catalog.register(
                _Channel(cid, self.identity, self.identity, folder_key)
            )

    # -- channels ------------------------------------------------------------------------
    def write_channel(self, other: str, *, create: bool) -> str | None:
        """Return the id of my ``me -> other`` channel folder, creating it if asked."""
        root_id = self.ensure_root()
        cid = self._catalog.write_id(other)
        if cid is not None or not create:
            return cid
        with self._setup_lock:
            cid = self._catalog.write_id(other)
            if cid is not None:
                return cid
            name = channel_folder_name(self.identity, other)
            cid = self.create_folder(name, root_id, f"to:{other}")
            if other != self.identity:
                self.grant(cid, other)
            self._catalog.mark_loaded([cid])  # new and empty: the index is complete
            self._catalog.register(_Channel(cid, self.identity, other))
            self._bookmarks.save()
        if other != self.identity:
            self.share_public_with(other)
        else:
            peers = self._catalog.readers() | set(self._peers.allowed or ())
            for peer in peers:
                self.share_public_with(peer)
        return cid

    def share_public_with(self, peer: str) -> None:
        """Let ``peer`` read my public channel (DID, app schemas)."""
        if peer == self.identity or not self._peers.allows(peer):
            return
        cid = self._catalog.write_id(self.identity)
        with self._lock:
            done = (cid, peer) in self._public_shared
        if cid is None or done:
            return
        self.ensure_shared(cid, peer)
        with self._lock:
            self._public_shared.add((cid, peer))

    def grant(
        self,
        folder_id: str,
        email: str,
        role: str = READER_ROLE,
        what: str = "share channel folder",
    ) -> None:
        """Give ``email`` access to ``folder_id`` (idempotent on Drive)."""
        if not self._peers.allows(email):
            raise PermissionDenied(f"{email} is not an allowed peer")
        body = {"type": "user", "role": role, "emailAddress": email}
        self._api.execute(
            lambda s: s.permissions().create(
                fileId=folder_id,
                body=body,
                sendNotificationEmail=False,
                fields="id",
            ),
            what,
        )

    def ensure_shared(self, folder_id: str, email: str) -> None:
        """Share ``folder_id`` read-only with ``email``; lower an older writer share."""
        perms = self._api.execute(
            lambda s: s.permissions().list(
                fileId=folder_id, fields="permissions(id,emailAddress,role)"
            ),
            "list permissions",
        )
        for perm in perms.get("permissions", []):
            if str(perm.get("emailAddress", "")).lower() != email:
                continue
            if perm.get("role") == "writer":  # granted by an older version
                self._api.execute(
                    lambda s, pid=perm["id"]: s.permissions().update(
                        fileId=folder_id,
                        permissionId=pid,
                        body={"role": READER_ROLE},
                        fields="id",
                    ),
                    "lower permission to reader",
                )
            if perm.get("role") in ("writer", READER_ROLE, "owner"):
                return
        self.grant(folder_id, email)

    def discover(self, *, force: bool = False) -> list[_Channel]:
        """Search for channel folders shared with me; returns the new ones.

        The changes feed reports new shares, so this search (which may lag) runs
        at the first start and, unless ``force``d, at most once per
        ``discovery_interval`` as a safety net.
        """
        now = self._clock()
        with self._lock:
            last = self._last_discovery
            if not force and last is not None and now - last < self._discovery_every:
                return []
            self._last_discovery = now
        q = f"sharedWithMe and mimeType = '{FOLDER_MIME}' and trashed = false"
        fresh = []
        for f in self._api.list_all(q, "discover shared channels"):
            channel = self.as_incoming_channel(f)
            if channel is not None and self._catalog.register(channel):
                fresh.append(channel)
        if fresh:
            self._bookmarks.save()
        return fresh

    def as_incoming_channel(self, f: dict[str, Any]) -> _Channel | None:
        """Return the channel ``f`` is, if it is a valid one shared with me."""
        if f.get("mimeType") != FOLDER_MIME or f.get("trashed"):
            return None
        shared = parse_shared_folder_name(str(f.get("name", "")))
        if shared is not None:
            owner, folder_key = shared
            # Named after someone else (a planted folder): never trust it.
            if file_owner(f) != owner or not self._peers.allows(owner):
                return None
            return _Channel(f["id"], owner, owner, folder_key)
        parsed = parse_channel_folder_name(str(f.get("name", "")))
        if parsed is None:
            return None
        writer, reader = parsed
        if file_owner(f) != writer:
            return None  # a folder named after someone else: never trust it
        if writer == self.identity:
            return _Channel(f["id"], writer, reader)
        # A peer's channel to me, or its public channel (DID, app schemas).
        if reader in (self.identity, writer) and self._peers.allows(writer):
            return _Channel(f["id"], writer, reader)
        return None

    # -- preparation ---------------------------------------------------------------------
    def prepare(self, peers: Sequence[str]) -> None:
        """Create my channel folders to ``peers`` and share them (see the transport)."""
        self.ensure_root()
        for peer in peers:
            other = peer.strip().lower()
            if not self._peers.allows(other):
                raise PermissionDenied(f"{other} is not an allowed peer")
            existed = self._catalog.write_id(other) is not None
            with self._lock:
                checked = other in self._share_checked
            cid = self.write_channel(other, create=True)
            if existed and not checked and cid is not None and other != self.identity:
                self.ensure_shared(cid, other)
            with self._lock:
                self._share_checked.add(other)
        self.write_channel(self.identity, create=True)
        for peer in peers:
            self.share_public_with(peer.strip().lower())
