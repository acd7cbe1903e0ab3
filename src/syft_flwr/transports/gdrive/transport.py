"""The Google Drive transport (see the package docstring for the layout).

:class:`GDriveTransport` keeps the :class:`Transport` API and delegates to
collaborators that each own their fields (and lock): ``DriveApi`` (calls),
``Catalog`` (channels and file index), ``Bookmarks`` (saved ids), ``Folders``
(root, channels, sharing), ``SharedFolders`` (blob folders), ``ChangesFeed``
(watches and the poller), ``Reader`` and ``Writer``.

Size: over 400 lines for a reason: this is the documented public face (the
:class:`Transport` API with its docstrings, the constructor's parameters and
the three credential constructors); every method only checks the transport is
open and delegates.
"""

from __future__ import annotations

import builtins
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from syft_flwr.errors import ConfigError, TransportClosed
from syft_flwr.transports.base import KeyCallback, Transport, Watch
from syft_flwr.transports.gdrive._api import CHUNK_GRANULARITY, DriveApi
from syft_flwr.transports.gdrive._auth import (
    api_root_factory,
    service_account_factory,
    token_file_factory,
)
from syft_flwr.transports.gdrive._catalog import Catalog
from syft_flwr.transports.gdrive._changes import ChangesFeed
from syft_flwr.transports.gdrive._folders import Folders
from syft_flwr.transports.gdrive._index import Reader
from syft_flwr.transports.gdrive._layout import Peers
from syft_flwr.transports.gdrive._listing import ChannelLister
from syft_flwr.transports.gdrive._shared import SharedFolders
from syft_flwr.transports.gdrive._state import Bookmarks, StateFile
from syft_flwr.transports.gdrive._writes import Writer

__all__ = ["GDriveTransport"]

logger = logging.getLogger("syft_flwr.transports.gdrive")


def _check_settings(
    identity: str,
    root_folder_name: str,
    poll_interval: float,
    max_retries: int,
    chunk_size: int,
    page_size: int,
) -> None:
    if "@" not in identity:
        raise ConfigError(f"identity must be an email, got {identity!r}")
    if chunk_size <= 0 or chunk_size % CHUNK_GRANULARITY:
        raise ConfigError("chunk_size must be a positive multiple of 256 KiB")
    if poll_interval <= 0 or max_retries < 0 or not 1 <= page_size <= 1000:
        raise ConfigError(
            "poll_interval > 0, max_retries >= 0 and 1 <= page_size <= 1000"
        )
    if not root_folder_name or "/" in root_folder_name:
        raise ConfigError(f"invalid root_folder_name: {root_folder_name!r}")


def _state_path(
    state_dir: str | os.PathLike[str] | None, identity: str, root_folder_name: str
) -> Path | None:
    if state_dir is None:
        return None
    safe = re.sub(r"[^A-Za-z0-9_.@+-]", "_", f"{identity}-{root_folder_name}")
    return Path(state_dir) / f"{safe}.json"


class GDriveTransport(Transport):
    """Move files between datasites through shared Google Drive folders.

    See the module docstring for the layout on Drive.

    Parameters
    ----------
    identity:
        Email of the Drive account this transport acts as (lower-cased). Checked
        once against ``about.get`` before the first folder is created.
    service_factory:
        Returns a new googleapiclient Drive v3 ``Resource``. Called once per thread
        that uses the transport, because ``httplib2.Http`` is not thread-safe.
    root_folder_name:
        Top-level folder of this identity's My Drive that holds its channel folders.
    allowed_peers:
        If given, only channels from these emails are read and only these peers are
        written to; others are ignored.
    sleep, clock:
        Injected for tests: the backoff sleep and a monotonic clock.
    poll_interval:
        Ceiling in seconds of the adaptive ``changes.list`` polling.
    max_retries:
        Retries per API call before :class:`RemoteServiceError` is raised.
    chunk_size:
        Chunk size in bytes of resumable uploads and of downloads; a multiple of
        256 KiB.
    page_size:
        ``pageSize`` of ``files.list`` calls (Drive allows up to 1000).
    reconcile_interval:
        Seconds between the poller's safety-net listings of every channel
        (default 1800; the changes feed is the primary signal).
    state_dir:
        Folder for this party's private Drive state (folder ids, the changes
        feed's page token, the file index), saved atomically. ``None`` keeps it in
        memory: every start is then a first start (one listing per channel).
    discovery_interval:
        Least seconds between safety-net searches for folders shared with this
        identity (new shares normally arrive through the changes feed).

    Raises
    ------
    ConfigError
        If a numeric parameter is out of range.
    """

    name = "gdrive"
    max_file_size = None
    #: One Drive folder per shared group, with a reader permission per reader.
    can_share = True
    default_rescan_interval = 2.0
    #: Each beat is a Drive write; the reader learns of it from the change feed
    #: it polls anyway, so a slower beat only delays noticing a dead data owner.
    default_heartbeat_interval = 10.0

    def __init__(
        self,
        identity: str,
        service_factory: Callable[[], Any],
        *,
        root_folder_name: str = "SyftBox",
        allowed_peers: Iterable[str] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        poll_interval: float = 2.0,
        max_retries: int = 6,
        chunk_size: int = 8 * 1024 * 1024,
        page_size: int = 1000,
        reconcile_interval: float = 1800.0,
        state_dir: str | os.PathLike[str] | None = None,
        discovery_interval: float = 30.0,
    ) -> None:
        # Google account addresses are case-insensitive and Drive reports them
        # lower-cased: on Drive the whole address is folded (SyftBox keeps the
        # local part exactly).
        super().__init__(identity.lower())
        _check_settings(
            self.identity,
            root_folder_name,
            poll_interval,
            max_retries,
            chunk_size,
            page_size,
        )
        self._root_name = root_folder_name
        allowed = (
            None
            if allowed_peers is None
            else frozenset(p.strip().lower() for p in allowed_peers)
        )
        self._peers = Peers(self.identity, allowed)
        self._api = DriveApi(
            service_factory, sleep=sleep, max_retries=max_retries, page_size=page_size
        )
        self._catalog = Catalog(self.identity)
        state = StateFile(
            _state_path(state_dir, self.identity, root_folder_name),
            self.identity,
            root_folder_name,
        )
        self._bookmarks = Bookmarks(state, self._catalog)
        self._wire(
            clock=clock,
            poll_interval=poll_interval,
            chunk_size=chunk_size,
            reconcile_interval=reconcile_interval,
            discovery_interval=discovery_interval,
        )

    def _wire(
        self,
        *,
        clock: Callable[[], float],
        poll_interval: float,
        chunk_size: int,
        reconcile_interval: float,
        discovery_interval: float,
    ) -> None:
        """Build the collaborators above the catalog, each given what it uses."""
        peers, api, catalog, marks = (
            self._peers,
            self._api,
            self._catalog,
            self._bookmarks,
        )
        self._lister = ChannelLister(self.identity, api, catalog)
        lister = self._lister
        self._folders = Folders(
            peers,
            api,
            catalog,
            marks,
            lister,
            root_name=self._root_name,
            clock=clock,
            discovery_interval=discovery_interval,
        )
        self._feed = ChangesFeed(
            self.identity,
            api,
            catalog,
            marks,
            self._folders,
            lister,
            clock=clock,
            poll_interval=poll_interval,
            reconcile_interval=reconcile_interval,
        )
        self._shared = SharedFolders(
            peers,
            api,
            catalog,
            marks,
            self._folders,
            lister,
            sync_for=self._feed.sync_for,
            clock=clock,
        )
        parts = (peers, api, catalog, self._folders, lister, self._feed, self._shared)
        self._reader = Reader(*parts, chunk_size=chunk_size)
        self._writer = Writer(*parts, chunk_size=chunk_size)

    # -- construction helpers ---------------------------------------------------------
    @classmethod
    def from_token_file(
        cls,
        identity: str,
        path: str | os.PathLike[str],
        *,
        api_root: str | None = None,
        token_uri: str | None = None,
        http_timeout: float = 120.0,
        **kwargs: Any,
    ) -> GDriveTransport:
        """Build a transport from an OAuth *authorized user* token file.

        Refreshed access tokens are written back to ``path`` with mode ``0600``.
        The token is never logged.

        Parameters
        ----------
        identity:
            The account's email.
        path:
            ``token.json`` as written by ``Credentials.to_json()``.
        api_root:
            Root URL of a Drive-compatible server (default: Google).
        token_uri:
            OAuth token endpoint override. google-auth ignores the ``token_uri``
            stored in the file and always uses Google's, so tests pass the fake's.
        http_timeout:
            Socket timeout in seconds of each thread's HTTP connection.
        **kwargs:
            Passed to the constructor.

        Raises
        ------
        ConfigError
            If the file is missing or is not an authorized-user token.
        """
        factory = token_file_factory(
            path, api_root=api_root, token_uri=token_uri, http_timeout=http_timeout
        )
        return cls(identity, factory, **kwargs)

    @classmethod
    def from_service_account(
        cls,
        identity: str,
        path: str | os.PathLike[str],
        *,
        api_root: str | None = None,
        http_timeout: float = 120.0,
        **kwargs: Any,
    ) -> GDriveTransport:
        """Build a transport from a service-account key file.

        If ``identity`` is not the service account's own email, the account
        impersonates ``identity`` (Workspace domain-wide delegation).
        """
        factory = service_account_factory(
            identity, path, api_root=api_root, http_timeout=http_timeout
        )
        return cls(identity, factory, **kwargs)

    @classmethod
    def from_api_root(
        cls,
        identity: str,
        root_url: str,
        credentials: Any,
        *,
        http_timeout: float = 120.0,
        **kwargs: Any,
    ) -> GDriveTransport:
        """Build a transport talking to any Drive v3-compatible server at ``root_url``.

        Parameters
        ----------
        root_url:
            e.g. ``FakeDriveServer.url`` or ``https://www.googleapis.com/``.
        credentials:
            google-auth credentials (``Credentials(token="fake:<email>")`` for the
            fake server).
        """
        factory = api_root_factory(root_url, credentials, http_timeout=http_timeout)
        return cls(identity, factory, **kwargs)

    def _check_open(self) -> None:
        if self._closed:
            raise TransportClosed("the Google Drive transport is closed")

    # -- primitives --------------------------------------------------------------------
    def put(self, key: str, data: bytes) -> None:
        """Upload ``data`` under ``key`` into this identity's channel folder.

        A new file is created with an id reserved beforehand, so a create whose
        response is lost is never stored twice.

        Raises
        ------
        PermissionDenied
            If this identity is not a party of the key, or the other party is not
            in ``allowed_peers``.
        RemoteServiceError
            If Drive keeps failing after the retries.
        """
        self._check_open()
        self._writer.put(key, data)

    def delete(self, key: str) -> None:
        """Delete this identity's file under ``key``.

        Drive lets only a file's owner delete it, so a key that exists only in the
        peer's channel is left alone (silently): the peer must delete it.
        """
        self._check_open()
        self._writer.delete(key)

    def delete_many(self, keys: Iterable[str]) -> None:
        """Delete several of this identity's keys with batched ``files.delete`` calls."""
        self._check_open()
        self._writer.delete_many(keys)

    def get(self, key: str) -> bytes:
        """Return the bytes under ``key`` (mine first, then the peer's copy).

        Raises
        ------
        MessageNotFound
            If neither channel holds the key (yet).
        """
        self._check_open()
        return self._reader.get(key)

    def read_limited(self, key: str, max_bytes: int) -> bytes:
        """Read an untrusted file: refused before downloading if Drive says it is
        larger than ``max_bytes``, and the download stops past the limit."""
        self._check_open()
        return self._reader.read_limited(key, max_bytes)

    def exists(self, key: str) -> bool:
        """Return whether ``key`` exists.

        My own files are answered from the index (only this identity deletes
        them); a peer's indexed file is confirmed with one ``files.get`` by id,
        which, unlike search, is strongly consistent. A miss costs at most one
        ``changes.list``, shared with other misses.
        """
        self._check_open()
        return self._reader.exists(key)

    def list(self, prefix: str) -> list[str]:
        """Return the keys under ``prefix`` in every channel this identity can read.

        Answered from the index after one (shared) poll of the changes feed, so a
        file a peer has just written is included.
        """
        self._check_open()
        return self._reader.list(prefix)

    def watch(self, prefix: str, callback: KeyCallback) -> Watch:
        """Call ``callback(key)`` for files created or replaced under ``prefix``.

        Callbacks run on the poller thread, or on a thread whose read polled the
        feed; never while a poll is in progress, so they may call the transport.
        """
        self._check_open()
        return self._feed.watch(prefix, callback)

    # -- shared blob folders ---------------------------------------------------------
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
        self._shared.share(folder, readers)

    def shared_folders(self, prefix: str) -> builtins.list[str]:
        """My shared folders under ``prefix``, empty ones included (from my channels)."""
        self._check_open()
        return self._shared.shared_folders(prefix)

    def unshare(self, folder: str) -> None:
        """Delete my shared folder ``folder`` itself: one ``files.delete``.

        Its files, if any are left, go with it (only I write there); its
        readers' permissions go too.
        """
        self._check_open()
        self._shared.unshare(folder)

    # -- preparation -------------------------------------------------------------------
    def verify_identity(self) -> None:
        """Check that the Drive account behind the service is ``identity``.

        Raises
        ------
        ConfigError
            If the credentials belong to another account.
        """
        self._folders.verify_identity()

    def prepare(self, app: str, endpoint: str, peers: Sequence[str]) -> None:
        """Create this identity's channel folders to ``peers`` and share them.

        Idempotent: existing folders are reused and their sharing is repaired
        (lowered to read-only where an older version granted write access).
        """
        self._check_open()
        self._folders.prepare(peers)
        super().prepare(app, endpoint, peers)

    def is_prepared(self, owner: str, app: str, endpoint: str) -> bool:
        """Return whether ``owner``'s channel folder to this identity exists."""
        self._check_open()
        owner = owner.strip().lower()
        if owner == self.identity:
            return True
        self._folders.ensure_root()
        if not self._catalog.incoming(owner):
            self._feed.sync_for(f"peer:{owner}")  # new shares arrive in the feed
        if not self._catalog.incoming(owner):
            self._folders.discover()
        return bool(self._catalog.incoming(owner))

    # -- the poller --------------------------------------------------------------------
    @property
    def poll_count(self) -> int:
        """Completed polls; each makes one ``changes.list`` call (more only when a
        single poll has more than 1000 changes to page through)."""
        return self._feed.poll_count

    @property
    def current_poll_delay(self) -> float:
        """Seconds the poller waits before its next ``changes.list`` call."""
        return self._feed.current_poll_delay

    @property
    def poller_alive(self) -> bool:
        """Whether the background poller thread is running."""
        return self._feed.poller_alive

    # -- lifecycle ----------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the poller (joined within 1 s) and close HTTP connections; idempotent."""
        if self._closed:
            return
        super().close()
        self._feed.stop()
        self._api.close()
        try:
            self._bookmarks.save()
        except OSError:
            logger.warning("could not save the Drive state", exc_info=True)

    def __repr__(self) -> str:
        return f"GDriveTransport(identity={self.identity!r}, root={self._root_name!r})"
