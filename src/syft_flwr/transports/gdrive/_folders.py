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
from collections.abc import Sequence
from typing import Any

from syft_flwr.errors import (
    ConfigError,
    MessageNotFound,
    PermissionDenied,
    TransportError,
)
from syft_flwr.transports.base import Transport
from syft_flwr.transports.gdrive._layout import (
    FOLDER_MIME,
    _Channel,
    channel_folder_name,
    escape_query_value,
    parse_channel_folder_name,
    parse_shared_folder_key,
    parse_shared_folder_name,
    shared_folder_name,
)
from syft_flwr.transports.gdrive._state import DriveState

__all__: list[str] = []

logger = logging.getLogger("syft_flwr.transports.gdrive")

#: Role a reader gets on a channel folder: reading is all it needs, because
#: every file lives in its writer's channel and only owners delete.
READER_ROLE = "reader"
#: Least seconds between two name searches for the same peer's shared folder.
_SHARED_SEARCH_EVERY = 10.0


class _FoldersMixin:
    """Root and channel folders of the transport."""

    def verify_identity(self) -> None:
        """Check that the Drive account behind the service is ``identity``.

        Raises
        ------
        ConfigError
            If the credentials belong to another account.
        """
        about = self._execute(
            lambda s: s.about().get(fields="user(emailAddress)"), "about.get"
        )
        actual = str(about.get("user", {}).get("emailAddress", "")).lower()
        if actual != self.identity:
            raise ConfigError(
                f"the Drive credentials belong to {actual!r}, not to {self.identity!r}"
            )
        self._verified = True

    # -- start-up ----------------------------------------------------------------------
    def _ensure_root(self) -> str:
        with self._lock:
            if self._root_id is not None:
                return self._root_id
        with self._setup_lock:
            if self._root_id is not None:
                return self._root_id
            if not self._verified:
                self.verify_identity()
            saved = self._state_file.load()
            with self._lock:
                self._reserved = dict(saved.reserved)
            if saved.root_id and saved.page_token and not self._rescan:
                self._restore(saved)
            else:
                self._first_start()
                self._rescan = False
            self._save_state()
            assert self._root_id is not None
            return self._root_id

    def _restore(self, saved: DriveState) -> None:
        """Resume from the saved state: no search, no listing."""
        for cid, (writer, reader) in saved.channels.items():
            self._register(_Channel(cid, writer, reader))
        for cid, (owner, folder_key) in saved.shared.items():
            self._register(_Channel(cid, owner, owner, shared=folder_key))
        with self._lock:
            self._loaded.update(saved.channels)
            self._loaded.update(saved.shared)
            self._page_token = saved.page_token
        for fid, (cid, key, md5, size, modified) in saved.index.items():
            with self._lock:
                channel = self._channels.get(cid)
            if channel is not None:
                self._remember(self._make_entry(channel, fid, key, md5, size, modified))
        with self._lock:
            self._root_id = saved.root_id

    def _first_start(self) -> None:
        # The token first: every change after it is in the feed, so the scans
        # below plus the feed miss nothing.
        token = self._execute(
            lambda s: s.changes().getStartPageToken(), "changes.getStartPageToken"
        )["startPageToken"]
        root_id = self._find_or_create_root()
        with self._lock:
            self._root_id = root_id
        self._load_my_channels(root_id)
        self._discover(force=True)
        with self._lock:
            channels = [c for c in self._channels.values() if c.id not in self._loaded]
        for channel in channels:
            self._list_channel(channel)
        with self._lock:
            self._page_token = str(token)

    def _find_or_create_root(self) -> str:
        reserved = self._reserved.get("root")
        if reserved is not None and self._exists_by_id(reserved):
            return reserved
        # A parent query without a name term: consistent, unlike name search.
        q = f"'root' in parents and mimeType = '{FOLDER_MIME}' and trashed = false"
        found = [
            f
            for f in self._list_all(q, "list my top-level folders")
            if f.get("name") == self._root_name and self._owned_by_me(f)
        ]
        if found:
            return self._keep_oldest(found)
        return self._create_folder(self._root_name, None, "root")

    def _exists_by_id(self, file_id: str) -> bool:
        try:
            meta = self._get_meta(file_id, "get folder")
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
        for f in self._list_all(f"'{dup}' in parents and trashed = false", "list"):
            if self._owned_by_me(f):
                self._execute(
                    lambda s, fid=f["id"]: s.files().update(
                        fileId=fid, addParents=keep, removeParents=dup, fields="id"
                    ),
                    "move into the kept folder",
                )
        try:
            self._execute(lambda s: s.files().delete(fileId=dup), "delete duplicate")
        except (MessageNotFound, PermissionDenied):
            pass

    def _owned_by_me(self, f: dict[str, Any]) -> bool:
        return self._file_owner(f) == self.identity

    @staticmethod
    def _file_owner(f: dict[str, Any]) -> str:
        owners = f.get("owners") or [{}]
        return str(owners[0].get("emailAddress", "")).lower()

    def _reserve(self, slot: str) -> str:
        """Return the id reserved for ``slot``, reserving and saving one if needed."""
        with self._lock:
            fid = self._reserved.get(slot)
        if fid is None:
            fid = self._new_id()
            with self._lock:
                self._reserved[slot] = fid
            self._save_state()  # durable before the create that uses it
        return fid

    def _create_folder(self, name: str, parent: str | None, slot: str) -> str:
        body: dict[str, Any] = {
            "id": self._reserve(slot),
            "name": name,
            "mimeType": FOLDER_MIME,
        }
        if parent:
            body["parents"] = [parent]
        created = self._create(body, "create folder")
        with self._lock:
            self._reserved.pop(slot, None)
        return str(created["id"])

    def _load_my_channels(self, root_id: str) -> None:
        q = f"'{root_id}' in parents and mimeType = '{FOLDER_MIME}' and trashed = false"
        by_name: dict[tuple[str, str], list[dict[str, Any]]] = {}
        shared: dict[str, list[dict[str, Any]]] = {}
        for f in self._list_all(q, "list my channels"):
            name = f.get("name", "")
            parsed = parse_channel_folder_name(name)
            if parsed and parsed[0] == self.identity and self._owned_by_me(f):
                by_name.setdefault(parsed, []).append(f)
            mine = parse_shared_folder_name(name)
            if mine and mine[0] == self.identity and self._owned_by_me(f):
                shared.setdefault(mine[1], []).append(f)
        for (writer, reader), same in by_name.items():
            self._register(_Channel(self._keep_oldest(same), writer, reader))
        for folder_key, same in shared.items():
            cid = self._keep_oldest(same)
            self._register(_Channel(cid, self.identity, self.identity, folder_key))

    # -- channels ------------------------------------------------------------------------
    def _register(self, channel: _Channel) -> bool:
        """Remember a channel; returns True if it was new."""
        with self._lock:
            if channel.id in self._channels:
                return False
            self._channels[channel.id] = channel
            if channel.writer == self.identity and channel.shared is None:
                self._write_ids.setdefault(channel.reader, channel.id)
            return True

    def _forget_channel(self, channel_id: str) -> None:
        with self._lock:
            channel = self._channels.pop(channel_id, None)
            if channel and self._write_ids.get(channel.reader) == channel_id:
                del self._write_ids[channel.reader]
            for ck in [ck for ck in self._index if ck[0] == channel_id]:
                self._drop_entry(ck)
            self._loaded.discard(channel_id)

    def _write_channel(self, other: str, *, create: bool) -> str | None:
        """Return the id of my ``me -> other`` channel folder, creating it if asked."""
        root_id = self._ensure_root()
        with self._lock:
            cid = self._write_ids.get(other)
        if cid is not None or not create:
            return cid
        with self._setup_lock:
            with self._lock:
                cid = self._write_ids.get(other)
            if cid is not None:
                return cid
            name = channel_folder_name(self.identity, other)
            cid = self._create_folder(name, root_id, f"to:{other}")
            if other != self.identity:
                self._share(cid, other)
            with self._lock:
                self._loaded.add(cid)  # new and empty: the index is complete
            self._register(_Channel(cid, self.identity, other))
            self._save_state()
        if other != self.identity:
            self._share_public_with(other)
        else:
            with self._lock:
                peers = set(self._write_ids) | set(self._allowed or ())
            for peer in peers:
                self._share_public_with(peer)
        return cid

    def _share_public_with(self, peer: str) -> None:
        """Let ``peer`` read my public channel (DID, app schemas)."""
        if peer == self.identity or not self._allowed_peer(peer):
            return
        with self._lock:
            cid = self._write_ids.get(self.identity)
            done = (cid, peer) in self._public_shared
        if cid is None or done:
            return
        self._ensure_shared(cid, peer)
        with self._lock:
            self._public_shared.add((cid, peer))

    def _share(
        self,
        folder_id: str,
        email: str,
        role: str = READER_ROLE,
        what: str = "share channel folder",
    ) -> None:
        """Give ``email`` access to ``folder_id`` (idempotent on Drive)."""
        if not self._allowed_peer(email):
            raise PermissionDenied(f"{email} is not an allowed peer")
        body = {"type": "user", "role": role, "emailAddress": email}
        self._execute(
            lambda s: s.permissions().create(
                fileId=folder_id,
                body=body,
                sendNotificationEmail=False,
                fields="id",
            ),
            what,
        )

    # -- shared blob folders -------------------------------------------------------------
    def share(self, folder: str, readers: Sequence[str]) -> None:
        """Create my shared blob folder ``folder`` and let ``readers`` (only) read it.

        ``folder`` must be ``<me>/app_data/<app>/blobs/<group>``. It becomes one
        Drive folder in my root (``syft_flwr#v1#<me>#shared#<app>#<group>``) with a
        ``reader`` permission per reader: one ``files.create`` plus one
        ``permissions.create`` per reader. Re-sharing an existing folder adds the
        permissions again (Drive keeps one per user).

        Raises
        ------
        PermissionDenied
            If the folder is not this identity's, or a reader is not an allowed peer.
        ConfigError
            If ``folder`` is not a shared blob folder key.
        """
        self._check_open()
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
            if not self._allowed_peer(email):
                raise PermissionDenied(f"{email} is not an allowed peer")
        folder_key = "{}/app_data/{}/blobs/{}".format(*parsed)
        with self._lock:
            existed = any(c.shared == folder_key for c in self._channels.values())
        cid = self._shared_id(folder_key, create=True)
        assert cid is not None
        try:
            for email in emails:
                self._share(cid, email, what="share blob folder")
        except Exception:
            if not existed:  # nothing was written yet: leave no empty folder behind
                self._drop_if_empty(cid)
            raise

    def shared_folders(self, prefix: str) -> list[str]:
        """My shared folders under ``prefix``, empty ones included (from my channels)."""
        self._check_open()
        base = prefix.strip("/") + "/"
        with self._lock:
            return sorted(
                c.shared
                for c in self._channels.values()
                if c.shared is not None
                and c.writer == self.identity
                and c.shared.startswith(base)
                and "/" not in c.shared[len(base) :]
            )

    def unshare(self, folder: str) -> None:
        """Delete my shared folder ``folder`` itself: one ``files.delete``.

        Its files, if any are left, go with it (only I write there); its
        readers' permissions go too.
        """
        self._check_open()
        cid = self._my_shared_id(folder.strip("/"))
        if cid is not None:
            self._delete_folder(cid)

    def _delete_folder(self, cid: str) -> None:
        """Delete my folder ``cid`` with what it holds, and forget it."""
        try:
            self._execute(lambda s: s.files().delete(fileId=cid), "delete folder")
        except (MessageNotFound, PermissionDenied):
            pass  # already gone
        self._forget_channel(cid)
        self._save_state()

    def _drop_if_empty(self, cid: str) -> None:
        """Delete my shared folder ``cid`` if I hold no file in it (best effort).

        An empty shared folder is never listed, so nothing would sweep it.
        """
        with self._lock:
            loaded = cid in self._loaded
            held = any(c == cid for c, _ in self._index)
        if not loaded or held:
            return
        try:
            self._execute(lambda s: s.files().delete(fileId=cid), "delete folder")
        except TransportError:
            logger.warning("could not remove the empty blob folder %s", cid)
            return
        self._forget_channel(cid)
        self._save_state()

    def _shared_id(self, folder_key: str, *, create: bool = False) -> str | None:
        """Return the id of the shared folder ``folder_key`` I may read, if known.

        My own are known from their creation (or the first start's listing) and
        created here if asked. A peer's is taken only when its name parses to
        ``folder_key`` and Drive says the peer owns it: first from what the
        changes feed reported, then one feed poll, then (at most every 10 s per
        folder) a search by exact name and owner.
        """
        self._ensure_root()
        owner = folder_key.split("/", 1)[0]

        def known() -> str | None:
            with self._lock:
                for c in self._channels.values():
                    if c.shared == folder_key and c.writer == owner:
                        return c.id
            return None

        cid = known()
        if cid is not None:
            return cid
        if owner == self.identity:
            if not create:
                return None  # only I create my shared folders: none exists
            with self._setup_lock:
                cid = known()
                if cid is not None:
                    return cid
                _, app, group = parse_shared_folder_key(folder_key) or ("", "", "")
                cid = self._create_folder(
                    shared_folder_name(owner, app, group),
                    self._ensure_root(),
                    f"shared:{folder_key}",
                )
                with self._lock:
                    self._loaded.add(cid)  # new and empty: the index is complete
                self._register(_Channel(cid, owner, owner, folder_key))
                self._save_state()
            return cid
        if not self._allowed_peer(owner):
            return None
        self._sync_for(f"shared:{folder_key}")  # a new share arrives in the feed
        cid = known()
        if cid is None:
            cid = self._search_shared(folder_key)
        return cid

    def _search_shared(self, folder_key: str) -> str | None:
        """Find a peer's shared folder by exact name and owner (rate limited)."""
        now = self._clock()
        with self._lock:
            last = self._shared_searched.get(folder_key)
            if last is not None and now - last < _SHARED_SEARCH_EVERY:
                return None
            self._shared_searched[folder_key] = now
            while len(self._shared_searched) > 1000:
                del self._shared_searched[next(iter(self._shared_searched))]
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
                self._as_incoming_channel, self._list_all(q, "find blob folder")
            )
            if c is not None and c.shared == folder_key and c.writer == owner
        ]
        if not found:
            return None
        channel = found[0]  # oldest first (the listing is ordered by createdTime)
        if self._register(channel):
            self._list_channel(channel)
            self._save_state()
        with self._lock:
            for c in self._channels.values():
                if c.shared == folder_key and c.writer == owner:
                    return c.id
        return None

    def _ensure_shared(self, folder_id: str, email: str) -> None:
        """Share ``folder_id`` read-only with ``email``; lower an older writer share."""
        perms = self._execute(
            lambda s: s.permissions().list(
                fileId=folder_id, fields="permissions(id,emailAddress,role)"
            ),
            "list permissions",
        )
        for perm in perms.get("permissions", []):
            if str(perm.get("emailAddress", "")).lower() != email:
                continue
            if perm.get("role") == "writer":  # granted by an older version
                self._execute(
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
        self._share(folder_id, email)

    def _discover(self, *, force: bool = False) -> list[_Channel]:
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
        for f in self._list_all(q, "discover shared channels"):
            channel = self._as_incoming_channel(f)
            if channel is not None and self._register(channel):
                fresh.append(channel)
        if fresh:
            self._save_state()
        return fresh

    def _as_incoming_channel(self, f: dict[str, Any]) -> _Channel | None:
        """Return the channel ``f`` is, if it is a valid one shared with me."""
        if f.get("mimeType") != FOLDER_MIME or f.get("trashed"):
            return None
        shared = parse_shared_folder_name(str(f.get("name", "")))
        if shared is not None:
            owner, folder_key = shared
            # Named after someone else (a planted folder): never trust it.
            if self._file_owner(f) != owner or not self._allowed_peer(owner):
                return None
            return _Channel(f["id"], owner, owner, folder_key)
        parsed = parse_channel_folder_name(str(f.get("name", "")))
        if parsed is None:
            return None
        writer, reader = parsed
        if self._file_owner(f) != writer:
            return None  # a folder named after someone else: never trust it
        if writer == self.identity:
            return _Channel(f["id"], writer, reader)
        # A peer's channel to me, or its public channel (DID, app schemas).
        if reader in (self.identity, writer) and self._allowed_peer(writer):
            return _Channel(f["id"], writer, reader)
        return None

    # -- preparation ---------------------------------------------------------------------
    def prepare(self, app: str, endpoint: str, peers: Sequence[str]) -> None:
        """Create this identity's channel folders to ``peers`` and share them.

        Idempotent: existing folders are reused and their sharing is repaired
        (lowered to read-only where an older version granted write access).
        """
        self._check_open()
        self._ensure_root()
        for peer in peers:
            other = peer.strip().lower()
            if not self._allowed_peer(other):
                raise PermissionDenied(f"{other} is not an allowed peer")
            with self._lock:
                existed = other in self._write_ids
                checked = other in self._share_checked
            cid = self._write_channel(other, create=True)
            if existed and not checked and cid is not None and other != self.identity:
                self._ensure_shared(cid, other)
            with self._lock:
                self._share_checked.add(other)
        self._write_channel(self.identity, create=True)
        for peer in peers:
            self._share_public_with(peer.strip().lower())
        Transport.prepare(self, app, endpoint, peers)  # type: ignore[arg-type]

    def is_prepared(self, owner: str, app: str, endpoint: str) -> bool:
        """Return whether ``owner``'s channel folder to this identity exists."""
        self._check_open()
        owner = owner.strip().lower()
        if owner == self.identity:
            return True
        self._ensure_root()
        if not self._incoming(owner):
            self._sync_for(f"peer:{owner}")  # new shares arrive in the feed
        if not self._incoming(owner):
            self._discover()
        return bool(self._incoming(owner))
