"""Folders: this identity's root, its channel folders, sharing, discovery."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from syft_flwr.errors import ConfigError, PermissionDenied
from syft_flwr.transports.base import Transport
from syft_flwr.transports.gdrive._api import FILE_FIELDS
from syft_flwr.transports.gdrive._layout import (
    FOLDER_MIME,
    _Channel,
    channel_folder_name,
    escape_query_value,
    parse_channel_folder_name,
)

__all__: list[str] = []


class _FoldersMixin:
    """Root and channel folders of the transport."""

    # -- folders and channels --------------------------------------------------------------
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

    def _ensure_root(self) -> str:
        with self._lock:
            if self._root_id is not None:
                return self._root_id
        with self._setup_lock:
            if self._root_id is not None:
                return self._root_id
            if not self._verified:
                self.verify_identity()
            # 'root' in parents is a parent query: consistent, unlike a name search.
            q = (
                f"'root' in parents and name = '{escape_query_value(self._root_name)}' "
                f"and mimeType = '{FOLDER_MIME}' and trashed = false"
            )
            found = [
                f for f in self._list_all(q, "find root folder") if self._owned_by_me(f)
            ]
            if found:
                root_id = found[0]["id"]
            else:
                root_id = self._create_folder(self._root_name, None)
            with self._lock:
                self._root_id = root_id
            self._load_my_channels(root_id)
            return root_id

    def _owned_by_me(self, f: dict[str, Any]) -> bool:
        return self._file_owner(f) == self.identity

    @staticmethod
    def _file_owner(f: dict[str, Any]) -> str:
        owners = f.get("owners") or [{}]
        return str(owners[0].get("emailAddress", "")).lower()

    def _create_folder(self, name: str, parent: str | None) -> str:
        body: dict[str, Any] = {"name": name, "mimeType": FOLDER_MIME}
        if parent:
            body["parents"] = [parent]
        where = f"'{parent}' in parents" if parent else "'root' in parents"
        q = (
            f"{where} and name = '{escape_query_value(name)}' "
            f"and mimeType = '{FOLDER_MIME}' and trashed = false"
        )

        def recover() -> dict[str, Any] | None:
            # The create may have happened although its response was lost.
            found = [
                f for f in self._list_all(q, "find folder") if self._owned_by_me(f)
            ]
            return found[0] if found else None

        created = self._call(
            lambda: self._svc().files().create(body=body, fields=FILE_FIELDS).execute(),
            "create folder",
            recover=recover,
        )
        return str(created["id"])

    def _load_my_channels(self, root_id: str) -> None:
        q = f"'{root_id}' in parents and mimeType = '{FOLDER_MIME}' and trashed = false"
        for f in self._list_all(q, "list my channels"):
            parsed = parse_channel_folder_name(f.get("name", ""))
            if parsed and parsed[0] == self.identity and self._owned_by_me(f):
                self._register(_Channel(f["id"], parsed[0], parsed[1]))

    def _register(self, channel: _Channel) -> bool:
        """Remember a channel; returns True if it was new."""
        with self._lock:
            if channel.id in self._channels:
                return False
            self._channels[channel.id] = channel
            if channel.writer == self.identity:
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
        self._ensure_root()
        with self._lock:
            cid = self._write_ids.get(other)
        if cid is not None or not create:
            return cid
        with self._setup_lock:
            with self._lock:
                cid = self._write_ids.get(other)
                root_id = self._root_id
            if cid is not None:
                return cid
            assert root_id is not None
            name = channel_folder_name(self.identity, other)
            # Another process of mine may have created it since the root was loaded.
            q = (
                f"'{root_id}' in parents and name = '{escape_query_value(name)}' "
                f"and mimeType = '{FOLDER_MIME}' and trashed = false"
            )
            found = [
                f for f in self._list_all(q, "find channel") if self._owned_by_me(f)
            ]
            if found:
                cid = str(found[0]["id"])
                if other != self.identity:
                    self._ensure_shared(cid, other)
            else:
                cid = self._create_folder(name, root_id)
                if other != self.identity:
                    self._share(cid, other)
                with self._lock:
                    self._loaded.add(cid)  # new and empty: the index is complete
            self._register(_Channel(cid, self.identity, other))
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
        if peer == self.identity:
            return
        with self._lock:
            cid = self._write_ids.get(self.identity)
            done = (cid, peer) in self._public_shared
        if cid is None or done:
            return
        self._ensure_shared(cid, peer, role="reader")
        with self._lock:
            self._public_shared.add((cid, peer))

    def _share(self, folder_id: str, email: str, role: str = "writer") -> None:
        """Give ``email`` access to ``folder_id`` (idempotent on Drive)."""
        body = {"type": "user", "role": role, "emailAddress": email}
        self._execute(
            lambda s: s.permissions().create(
                fileId=folder_id,
                body=body,
                sendNotificationEmail=False,
                fields="id",
            ),
            "share channel folder",
        )

    def _ensure_shared(self, folder_id: str, email: str, role: str = "writer") -> None:
        perms = self._execute(
            lambda s: s.permissions().list(
                fileId=folder_id, fields="permissions(emailAddress,role)"
            ),
            "list permissions",
        )
        for perm in perms.get("permissions", []):
            same = str(perm.get("emailAddress", "")).lower() == email
            if same and perm.get("role") in (role, "writer", "owner"):
                return
        self._share(folder_id, email, role)

    def _discover(
        self, *, force: bool = False, peer: str | None = None
    ) -> list[_Channel]:
        """Find channel folders shared with me; returns the new ones.

        Unless ``force``d, runs at most once a second per ``peer`` (``None``: any
        peer), so repeated misses stay cheap while a peer's first share is found
        at once; the poller also discovers channels from ``changes.list``.
        """
        now = self._clock()
        with self._lock:
            if not force:
                last = self._last_discovery.get(peer)
                if last is not None and now - last < min(1.0, self._poll_interval):
                    return []
                self._last_discovery[peer] = now
        q = f"sharedWithMe and mimeType = '{FOLDER_MIME}' and trashed = false"
        fresh = []
        for f in self._list_all(q, "discover shared channels"):
            channel = self._as_incoming_channel(f)
            if channel is not None and self._register(channel):
                fresh.append(channel)
        return fresh

    def _as_incoming_channel(self, f: dict[str, Any]) -> _Channel | None:
        """Return the channel ``f`` is, if it is a valid one shared with me."""
        if f.get("mimeType") != FOLDER_MIME or f.get("trashed"):
            return None
        parsed = parse_channel_folder_name(str(f.get("name", "")))
        if parsed is None:
            return None
        writer, reader = parsed
        owner = self._file_owner(f)
        if owner != writer:
            return None  # a folder named after someone else: never trust it
        if reader == self.identity and writer != self.identity:
            return (
                _Channel(f["id"], writer, reader)
                if self._allowed_peer(writer)
                else None
            )
        if reader == writer != self.identity:
            # A peer's public channel (its DID, app schemas), shared read-only.
            return (
                _Channel(f["id"], writer, reader)
                if self._allowed_peer(writer)
                else None
            )
        if writer == self.identity:
            return _Channel(f["id"], writer, reader)
        return None

    # -- preparation ---------------------------------------------------------------------------
    def prepare(self, app: str, endpoint: str, peers: Sequence[str]) -> None:
        """Create this identity's channel folders to ``peers`` and share them.

        Idempotent: existing folders are reused and their sharing is repaired.
        """
        self._check_open()
        self._ensure_root()  # loads the channels made by earlier runs
        for peer in peers:
            other = peer.strip().lower()
            if not self._allowed_peer(other):
                raise PermissionDenied(f"{other} is not an allowed peer")
            with self._lock:
                existed = other in self._write_ids
            cid = self._write_channel(other, create=True)
            if existed and cid is not None and other != self.identity:
                self._ensure_shared(cid, other)
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
            self._discover(force=True)
        return bool(self._incoming(owner))
