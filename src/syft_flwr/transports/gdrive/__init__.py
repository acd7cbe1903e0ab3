"""Google Drive transport: files travel through per-(writer -> reader) shared folders.

Layout on Drive
---------------
Every identity keeps one folder named ``root_folder_name`` (default ``SyftBox``)
at the top of its My Drive. Inside it there is one *channel folder* per party it
writes to, owned by the writer and shared **reader** with the reader (reading
is all a reader needs: every file lives in its writer's channel)::

    My Drive/SyftBox/                                         (alice's drive)
      syft_flwr#v1#alice@x.org#to#bob@y.com/                  shared with bob
        bob@y.com/app_data/flwr/demo/rpc/messages/alice@x.org/42.request
      syft_flwr#v1#alice@x.org#to#alice@x.org/                self-channel, not shared

Files are stored **flat**: a file's Drive name is its whole transport key
(``<owner>/app_data/<app>/rpc/<endpoint>/<peer>/<file>``; Drive names may contain
``/``). One parent-scoped ``files.list`` of a channel therefore yields every key
in it, a ``changes.list`` entry (name + parent) maps straight back to a key, and
no nested folders have to be created or walked.

Shared blob folders
-------------------
Keys ``<owner>/app_data/<app>/blobs/<group>/<file>`` (one model stored once for
several readers, :meth:`Transport.share`) live in their own folder
``syft_flwr#v1#<owner>#shared#<app>#<group>`` in the owner's root, shared
**reader** with exactly the readers named (one permission each). A reader takes
such a folder only when its name re-parses to the key's folder and its Drive
owner is the key's owner, learning of it from the changes feed (else one search
by exact name and owner); the owner deletes it, files and permissions at once,
with one ``files.delete`` when its last file is deleted.

Channels
--------
A key's two parties are its ``owner`` and ``peer`` (``owner`` twice for keys that
are not RPC keys). A file lives in the channel of its *writer*: this identity
writes into ``me -> other`` where ``other`` is whichever party is not ``me``
(``me -> me`` when both are ``me``), and reads from its own channel first, then
from the other party's ``other -> me`` channel. Channel folder names are
``syft_flwr#v1#<writer>#to#<reader>`` with lower-cased emails in which ``%`` and
``#`` are percent-escaped, so any valid email (``_``, ``+``, ``.``, ``'``, even
``#``) round-trips. A folder is only taken for a channel when its name re-parses
exactly, the reader is this identity (or it is our own channel), and its Drive
**owner** is the claimed writer; files inside are only accepted when they are
owned by the channel writer and their key's parties are exactly the channel's
two parties. Folders shared by users outside ``allowed_peers`` are ignored.

Consistency and cost
--------------------
* Writes are single Drive uploads (multipart up to 5 MB, resumable above), so a
  reader sees the old content, nothing, or the whole new content.
* Exactly once: files and folders are created with ids from ``files.generateIds``,
  so a create whose response is lost, re-sent by the HTTP client or by our retry,
  conflicts (409) instead of storing a second file; the file is then fetched by id.
  Folder ids are reserved and saved before their create, so a crash between the
  two re-uses the id.
* Nothing is found by name (Drive's name index lags): the root and channel
  folders are found by id from the party's private state (``state_dir``, saved
  atomically with the changes feed's page token and the file index); the first
  start lists parents without a name term and merges same-named duplicates that
  older versions left.
* One poller thread per transport makes **one** ``changes.list`` call per tick
  for all channels, backing off from 0.25 s after activity to ``poll_interval``
  when idle. Reads answer from the index; a peer's key asked for the first time
  costs one shared ``changes.list``, a re-check none while the poller runs. A
  restart resumes the feed from the saved token without listing anything; a
  reconciliation listing (default every 30 min) is the safety net.
* Drive lets only a file's owner delete it: :meth:`GDriveTransport.delete` of a
  key that only exists in the peer's channel is a silent no-op; the peer must
  delete its own files.
* Every API call is retried with exponential backoff and jitter on 429, 5xx,
  403 rate-limit reasons, transient 400s of resumable uploads and dropped
  connections; after ``max_retries`` it raises
  :class:`~syft_flwr.errors.RemoteServiceError`. No googleapiclient exception
  leaves this package.

Modules, bottom up (each imports only those before it)
-----------------------------------------------------
``_layout`` (names, keys, records, :class:`Peers`), ``_auth`` (credentials),
``_api`` (``DriveApi``: calls, retries, idempotent create), ``_catalog``
(``Catalog``: channels and the file index, in memory), ``_state``
(``Bookmarks``: root id, reserved ids, page token, saved with the catalog),
``_listing`` (``ChannelLister``), ``_folders`` (``Folders``: root, channels,
sharing, discovery), ``_changes`` (``ChangesFeed``: watches, the poller),
``_shared`` (``SharedFolders``), ``_index`` (``Reader``), ``_writes``
(``Writer``), ``transport`` (``GDriveTransport``, which builds and wires them).
Each collaborator owns its fields and its lock; none reads another's fields.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from syft_flwr.errors import ConfigError
from syft_flwr.transports.gdrive._auth import (
    DRIVE_SCOPES,
    _authorized_service_factory,
    _PersistingCredentialsMixin,
    _write_private,
    rerooted_drive_discovery,
)
from syft_flwr.transports.gdrive._layout import (
    CHANNEL_PREFIX,
    FOLDER_MIME,
    channel_folder_name,
    escape_query_value,
    key_parties,
    parse_channel_folder_name,
)
from syft_flwr.transports.gdrive.transport import GDriveTransport

__all__ = [
    "CHANNEL_PREFIX",
    "DRIVE_SCOPES",
    "ENV_API_ROOT",
    "ENV_SERVICE_ACCOUNT_PATH",
    "ENV_TOKEN_PATH",
    "ENV_TOKEN_URI",
    "FOLDER_MIME",
    "GDriveTransport",
    "channel_folder_name",
    "escape_query_value",
    "key_parties",
    "parse_channel_folder_name",
    "rerooted_drive_discovery",
    "transport_from_env",
]

# Re-exported for the CLI (token files) and older imports.
_ = (_authorized_service_factory, _PersistingCredentialsMixin, _write_private)

ENV_TOKEN_PATH = "GDRIVE_TOKEN_PATH"
ENV_SERVICE_ACCOUNT_PATH = "GDRIVE_SERVICE_ACCOUNT_PATH"
ENV_API_ROOT = "SYFT_FLWR_GDRIVE_API_ROOT"
ENV_TOKEN_URI = "SYFT_FLWR_GDRIVE_TOKEN_URI"


def transport_from_env(
    identity: str, environ: Mapping[str, str] | None = None, **kwargs: Any
) -> GDriveTransport:
    """Build the Drive transport of ``identity`` from the environment.

    ``GDRIVE_TOKEN_PATH`` (OAuth authorized-user token file) or
    ``GDRIVE_SERVICE_ACCOUNT_PATH`` (service-account key); ``SYFT_FLWR_GDRIVE_API_ROOT``
    points at a Drive-compatible server (tests), with ``SYFT_FLWR_GDRIVE_TOKEN_URI``
    for its token endpoint. ``SYFT_FLWR_POLL_INTERVAL`` caps the polling interval.

    Raises
    ------
    ConfigError
        If no credentials are configured.
    """
    from syft_flwr.config import Settings

    env = os.environ if environ is None else environ
    api_root = env.get(ENV_API_ROOT) or None
    kwargs.setdefault("poll_interval", Settings.from_env(env).poll_interval)
    if env.get(ENV_TOKEN_PATH):
        return GDriveTransport.from_token_file(
            identity,
            env[ENV_TOKEN_PATH],
            api_root=api_root,
            token_uri=env.get(ENV_TOKEN_URI) or None,
            **kwargs,
        )
    if env.get(ENV_SERVICE_ACCOUNT_PATH):
        return GDriveTransport.from_service_account(
            identity, env[ENV_SERVICE_ACCOUNT_PATH], api_root=api_root, **kwargs
        )
    raise ConfigError(
        f"Google Drive mode needs credentials: set {ENV_TOKEN_PATH} (OAuth token file, "
        f"see `syft_flwr gdrive-login`) or {ENV_SERVICE_ACCOUNT_PATH}"
    )
