"""Google Drive transport: files travel through per-(writer -> reader) shared folders.

Layout on Drive
---------------
Every identity keeps one folder named ``root_folder_name`` (default ``SyftBox``)
at the top of its My Drive. Inside it there is one *channel folder* per party it
writes to, owned by the writer and shared **writer** with the reader::

    My Drive/SyftBox/                                         (alice's drive)
      syft_flwr#v1#alice@x.org#to#bob@y.com/                  shared with bob
        bob@y.com/app_data/flwr/demo/rpc/messages/alice@x.org/42.request
      syft_flwr#v1#alice@x.org#to#alice@x.org/                self-channel, not shared

Files are stored **flat**: a file's Drive name is its whole transport key
(``<owner>/app_data/<app>/rpc/<endpoint>/<peer>/<file>``; Drive names may contain
``/``). One parent-scoped ``files.list`` of a channel therefore yields every key
in it, a ``changes.list`` entry (name + parent) maps straight back to a key, and
no nested folders have to be created or walked.

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
* Lookups never search by name alone (Drive's name index lags): they use a local
  index ``{key: file id, md5, size, modifiedTime}`` kept fresh by the poller, and
  fall back to a parent-scoped ``files.list`` of the channel.
* ``watch`` is served by one poller thread per transport that makes **one**
  ``changes.list`` call per tick for all channels, backing off from 0.25 s after
  activity to ``poll_interval`` when idle, plus a low-frequency reconciliation
  listing of every channel as a safety net.
* Drive lets only a file's owner delete it: :meth:`GDriveTransport.delete` of a
  key that only exists in the peer's channel is a silent no-op; the peer must
  delete its own files.
* Every API call is retried with exponential backoff and jitter on 429, 5xx,
  403 rate-limit reasons, transient 400s of resumable uploads and dropped
  connections; after ``max_retries`` it raises
  :class:`~syft_flwr.errors.RemoteServiceError`. No googleapiclient exception
  leaves this module.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import logging
import os
import random
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, unquote

from syft_flwr.errors import (
    ConfigError,
    MessageNotFound,
    PermissionDenied,
    RemoteServiceError,
    TransportClosed,
    TransportError,
)
from syft_flwr.transports.base import (
    HEARTBEAT_NAME,
    KeyCallback,
    RpcPath,
    Transport,
    Watch,
    check_key,
)

__all__ = [
    "CHANNEL_PREFIX",
    "DRIVE_SCOPES",
    "FOLDER_MIME",
    "GDriveTransport",
    "channel_folder_name",
    "escape_query_value",
    "key_parties",
    "transport_from_env",
    "parse_channel_folder_name",
    "rerooted_drive_discovery",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

FOLDER_MIME = "application/vnd.google-apps.folder"
DRIVE_SCOPES = ("https://www.googleapis.com/auth/drive",)
CHANNEL_PREFIX = "syft_flwr#v1#"

#: Bodies above this size use a resumable upload (Drive's limit for simple ones).
SIMPLE_UPLOAD_LIMIT = 5 * 1024 * 1024
_CHUNK_GRANULARITY = 256 * 1024
_FAST_POLL = 0.25  # seconds between polls right after activity
_BACKOFF_BASE = 1.0  # seconds; doubles per retry
_BACKOFF_CAP = 32.0
_RETRY_REASONS = {
    "rateLimitExceeded",
    "userRateLimitExceeded",
    "backendError",
    "internalError",
}
_DENIED_REASONS = {
    "insufficientFilePermissions",
    "forbidden",
    "appNotAuthorizedToFile",
    "cannotAddParent",
    "fieldNotWritable",
    "insufficientPermissions",
}
_FILE_FIELDS = "id,name,mimeType,parents,owners(emailAddress),md5Checksum,size,modifiedTime,trashed"
_LIST_FIELDS = f"nextPageToken,files({_FILE_FIELDS})"
_CHANGE_FIELDS = (
    f"nextPageToken,newStartPageToken,changes(fileId,removed,file({_FILE_FIELDS}))"
)
#: Socket-level failures of a keep-alive connection: safe to retry.
_NETWORK_ERRORS: tuple[type[BaseException], ...] = (
    ConnectionError,  # ConnectionResetError, BrokenPipeError, RemoteDisconnected, ...
    http.client.HTTPException,  # BadStatusLine, IncompleteRead, ...
    TimeoutError,  # socket.timeout is an alias of TimeoutError
    ssl.SSLError,
)


# -- public helpers ---------------------------------------------------------------------


def _escape_email(email: str) -> str:
    return quote(email.strip().lower(), safe="@.+-_!$&'*=?^`{|}~/")


def channel_folder_name(writer: str, reader: str) -> str:
    """Return the Drive folder name of the ``writer -> reader`` channel.

    Emails are lower-cased and ``%``/``#`` are percent-escaped, so the name splits
    unambiguously on ``#`` for any valid email.

    Examples
    --------
    >>> channel_folder_name("Ann_Lee+fl@x.org", "bob@y.com")
    'syft_flwr#v1#ann_lee+fl@x.org#to#bob@y.com'
    """
    return f"{CHANNEL_PREFIX}{_escape_email(writer)}#to#{_escape_email(reader)}"


def parse_channel_folder_name(name: str) -> tuple[str, str] | None:
    """Return ``(writer, reader)`` if ``name`` is exactly a channel folder name.

    The name must re-encode to itself, so near-misses (upper case, stray ``#``,
    an extra suffix) are rejected rather than guessed at.
    """
    parts = name.split("#")
    if (
        len(parts) != 5
        or f"{parts[0]}#{parts[1]}#" != CHANNEL_PREFIX
        or parts[3] != "to"
    ):
        return None
    writer, reader = unquote(parts[2]), unquote(parts[4])
    if "@" not in writer or "@" not in reader:
        return None
    if channel_folder_name(writer, reader) != name:
        return None
    return writer, reader


def escape_query_value(value: str) -> str:
    """Escape ``\\`` and ``'`` for use inside a single-quoted Drive ``q`` string."""
    return value.replace("\\", "\\\\").replace("'", "\\'")


def key_parties(key: str) -> tuple[str, str]:
    """Return the two parties of a key: ``(owner, peer)`` for RPC keys, else ``(owner, owner)``.

    Raises
    ------
    ConfigError
        If the key is invalid.
    """
    check_key(key)
    rpc = RpcPath.parse(key)
    if rpc is not None:
        return rpc.owner.lower(), rpc.peer.lower()
    owner = key.split("/", 1)[0].lower()
    return owner, owner


def rerooted_drive_discovery(root_url: str) -> str:
    """Return googleapiclient's shipped Drive v3 discovery doc pointed at ``root_url``.

    ``client_options={"api_endpoint": ...}`` alone is not enough: media uploads
    keep ``https`` and batches keep Google's host. Re-rooting ``rootUrl``,
    ``mtlsRootUrl`` and ``baseUrl`` moves every call.
    """
    import googleapiclient.discovery as discovery

    path = (
        Path(discovery.__file__).parent
        / "discovery_cache"
        / "documents"
        / "drive.v3.json"
    )
    doc = json.loads(path.read_text(encoding="utf-8"))
    root = root_url if root_url.endswith("/") else root_url + "/"
    doc.update(rootUrl=root, mtlsRootUrl=root, baseUrl=root + "drive/v3/")
    return json.dumps(doc)


# -- internals ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Channel:
    id: str
    writer: str
    reader: str

    @property
    def parties(self) -> frozenset[str]:
        return frozenset((self.writer, self.reader))


@dataclass(frozen=True)
class _Entry:
    """One file of a channel, as last seen."""

    file_id: str
    channel_id: str
    key: str
    md5: str | None
    size: int | None
    modified: str

    @property
    def marker(self) -> tuple[str, str, str | None]:
        return (self.file_id, self.modified, self.md5)


def _http_status(exc: Exception) -> int:
    resp = getattr(exc, "resp", None)
    try:
        return int(getattr(resp, "status", 0) or 0)
    except (TypeError, ValueError):
        return 0


def _http_reason(exc: Exception) -> str:
    details = getattr(exc, "error_details", None)
    if isinstance(details, list) and details and isinstance(details[0], dict):
        return str(details[0].get("reason", ""))
    content = getattr(exc, "content", b"") or b""
    try:
        data = json.loads(content)
        return str(data["error"]["errors"][0]["reason"])
    except (ValueError, KeyError, IndexError, TypeError):
        return ""


def _bytes_upload(data: bytes, chunk_size: int, resumable: bool) -> Any:
    from googleapiclient.http import MediaIoBaseUpload

    class _BytesUpload(MediaIoBaseUpload):
        # Hand httplib2 bytes, not a stream slice: on a stale keep-alive socket
        # httplib2 silently re-sends the body, and a consumed stream slice would
        # re-send nothing under the old Content-Length (both ends then hang).
        def has_stream(self) -> bool:
            return False

    return _BytesUpload(
        io.BytesIO(data),
        "application/octet-stream",
        chunksize=chunk_size,
        resumable=resumable,
    )


class _PersistingCredentialsMixin:
    """Writes refreshed OAuth tokens back to their file (mode 0600)."""

    _syft_path: Path | None = None
    _syft_lock = threading.Lock()

    def refresh(self, request: Any) -> None:
        with self._syft_lock:
            super().refresh(request)  # type: ignore[misc]
            if self._syft_path is not None:
                _write_private(self._syft_path, self.to_json())  # type: ignore[attr-defined]


def _write_private(path: Path, text: str) -> None:
    """Atomically replace ``path`` with ``text``, readable by the owner only."""
    # mkstemp creates the file with mode 0600, so the token is never world-readable.
    fd, tmp = tempfile.mkstemp(prefix=".token-", dir=str(path.parent))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        os.chmod(path, 0o600)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _authorized_service_factory(
    credentials: Any, document: str | None, timeout: float
) -> Callable[[], Any]:
    def factory() -> Any:
        from google_auth_httplib2 import AuthorizedHttp
        from googleapiclient.discovery import build, build_from_document
        from googleapiclient.http import build_http

        raw = build_http()  # drops 308 from httplib2's redirect codes
        raw.timeout = timeout
        http = AuthorizedHttp(credentials, http=raw)
        if document is None:
            return build(
                "drive", "v3", http=http, static_discovery=True, cache_discovery=False
            )
        return build_from_document(document, http=http)

    return factory


# -- the transport -------------------------------------------------------------------------


def _is_heartbeat(key: str) -> bool:
    return key.rsplit("/", 1)[-1] == HEARTBEAT_NAME


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
        (default: 15 × ``poll_interval``).

    Raises
    ------
    ConfigError
        If a numeric parameter is out of range.
    """

    name = "gdrive"
    max_file_size = None
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
        reconcile_interval: float | None = None,
    ) -> None:
        super().__init__(identity)
        if "@" not in self.identity:
            raise ConfigError(f"identity must be an email, got {identity!r}")
        if chunk_size <= 0 or chunk_size % _CHUNK_GRANULARITY:
            raise ConfigError("chunk_size must be a positive multiple of 256 KiB")
        if poll_interval <= 0 or max_retries < 0 or not 1 <= page_size <= 1000:
            raise ConfigError(
                "poll_interval > 0, max_retries >= 0 and 1 <= page_size <= 1000"
            )
        if not root_folder_name or "/" in root_folder_name:
            raise ConfigError(f"invalid root_folder_name: {root_folder_name!r}")
        self._factory = service_factory
        self._root_name = root_folder_name
        self._allowed = (
            None
            if allowed_peers is None
            else {p.strip().lower() for p in allowed_peers}
        )
        self._sleep = sleep
        self._clock = clock
        self._poll_interval = poll_interval
        self._fast_poll = min(_FAST_POLL, poll_interval)
        self._max_retries = max_retries
        self._chunk_size = chunk_size
        self._page_size = page_size
        self._reconcile_interval = (
            reconcile_interval if reconcile_interval is not None else 15 * poll_interval
        )
        self._rng = random.Random()

        self._local = threading.local()
        self._services: list[Any] = []
        self._lock = threading.RLock()  # guards the caches below; never held over I/O
        self._setup_lock = threading.RLock()  # serializes folder creation
        self._key_locks = [threading.Lock() for _ in range(64)]
        self._verified = False
        self._root_id: str | None = None
        self._channels: dict[str, _Channel] = {}  # folder id -> channel
        self._write_ids: dict[str, str] = {}  # reader -> my channel folder id
        self._public_shared: set[tuple[str, str]] = set()  # (public cid, peer)
        self._not_channels: set[str] = set()  # folder ids known not to be channels
        self._loaded: set[str] = set()  # channel ids whose listing is in the index
        self._index: dict[tuple[str, str], _Entry] = {}  # (channel id, key) -> entry
        self._by_file: dict[str, tuple[str, str]] = {}  # file id -> (channel id, key)
        self._last_discovery: dict[str | None, float] = {}

        self._watches: list[Watch] = []
        self._notified: dict[tuple[str, str], tuple[str, str, str | None]] = {}
        self._baseline: dict[tuple[str, str], tuple[str, str, str | None]] = {}
        self._page_token: str | None = None
        self._poller: threading.Thread | None = None
        self._stop = threading.Event()
        self._activity = threading.Event()
        self._next_reconcile = 0.0
        self._delay = self._fast_poll
        #: Completed polls; each makes one ``changes.list`` call (more only when a
        #: single poll has more than 1000 changes to page through).
        self.poll_count = 0

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
        from google.oauth2.credentials import Credentials

        class _Creds(_PersistingCredentialsMixin, Credentials):
            pass

        token_path = Path(path)
        try:
            creds = _Creds.from_authorized_user_file(
                str(token_path), list(DRIVE_SCOPES)
            )
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"cannot load Drive token file {token_path}: {exc}"
            ) from None
        if token_uri is not None:
            creds = creds.with_token_uri(token_uri)
        creds._syft_path = token_path
        document = rerooted_drive_discovery(api_root) if api_root else None
        factory = _authorized_service_factory(creds, document, http_timeout)
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
        from google.oauth2 import service_account

        try:
            creds = service_account.Credentials.from_service_account_file(
                str(path), scopes=list(DRIVE_SCOPES)
            )
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"cannot load service account file {path}: {exc}"
            ) from None
        if creds.service_account_email.lower() != identity.strip().lower():
            creds = creds.with_subject(identity.strip().lower())
        document = rerooted_drive_discovery(api_root) if api_root else None
        return cls(
            identity,
            _authorized_service_factory(creds, document, http_timeout),
            **kwargs,
        )

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
        document = rerooted_drive_discovery(root_url)
        factory = _authorized_service_factory(credentials, document, http_timeout)
        return cls(identity, factory, **kwargs)

    # -- plumbing -----------------------------------------------------------------------
    def _svc(self) -> Any:
        svc = getattr(self._local, "service", None)
        if svc is None:
            try:
                svc = self._factory()
            except TransportError:
                raise
            except Exception as exc:
                raise RemoteServiceError(
                    f"cannot build the Drive service: {exc}"
                ) from exc
            self._local.service = svc
            with self._lock:
                self._services.append(svc)
        return svc

    def _check_open(self) -> None:
        if self._closed:
            raise TransportClosed("the Google Drive transport is closed")

    def _call(
        self,
        fn: Callable[[], T],
        what: str,
        *,
        resumable: bool = False,
        recover: Callable[[], T | None] | None = None,
    ) -> T:
        """Run one API call with bounded exponential backoff and jitter.

        ``recover`` runs before each retry and may return a result that makes the
        retry unnecessary (a create whose response was lost but which did happen).
        """
        from google.auth import exceptions as auth_errors
        from googleapiclient import errors as api_errors

        attempt = 0
        while True:
            status: int | None = None
            try:
                return fn()
            except TransportError:
                raise  # already mapped (e.g. by a nested call)
            except api_errors.HttpError as exc:
                status = _http_status(exc)
                reason = _http_reason(exc)
                retry = (
                    status in (408, 429)
                    or status >= 500
                    or (status == 403 and reason in _RETRY_REASONS)
                    or (status == 400 and resumable)
                )
                if not retry:
                    raise self._map_http(exc, status, reason, what) from exc
                last: BaseException = exc
            except _NETWORK_ERRORS as exc:
                last = exc
            except auth_errors.RefreshError as exc:
                if not getattr(exc, "retryable", False):
                    raise RemoteServiceError(
                        f"{what}: Google credentials could not be refreshed", status=401
                    ) from exc
                last = exc
            except auth_errors.TransportError as exc:
                last = exc  # the token endpoint was unreachable: transient
            except Exception as exc:  # httplib2.ServerNotFoundError, BatchError, ...
                raise RemoteServiceError(
                    f"{what} failed: {type(exc).__name__}: {exc}"
                ) from exc
            attempt += 1
            limit = 0 if getattr(self._local, "no_retry", False) else self._max_retries
            if attempt > limit:
                raise RemoteServiceError(
                    f"{what} still failing after {limit} retries "
                    f"({status or type(last).__name__})",
                    status=status,
                ) from last
            # Equal jitter: the delay doubles, drawn from [d/2, d], so retries from
            # many clients spread out but the wait still grows.
            ceiling = min(_BACKOFF_CAP, _BACKOFF_BASE * 2 ** (attempt - 1))
            delay = ceiling * (0.5 + 0.5 * self._rng.random())
            logger.warning(
                "Drive %s failed (%s); retry %d/%d in %.2fs",
                what,
                status or type(last).__name__,
                attempt,
                self._max_retries,
                delay,
            )
            self._sleep(delay)
            if recover is not None:
                recovered = self._try_recover(recover)
                if recovered is not None:
                    return recovered

    def _try_recover(self, recover: Callable[[], T | None]) -> T | None:
        """Run ``recover`` once, without retries of its own; failures mean "no"."""
        self._local.no_retry = True
        try:
            return recover()
        except TransportError:
            return None
        finally:
            self._local.no_retry = False

    @staticmethod
    def _map_http(
        exc: Exception, status: int, reason: str, what: str
    ) -> TransportError:
        message = f"{what}: HTTP {status} {reason}".strip()
        if status == 404:
            return MessageNotFound(message)
        if status == 403 and reason in _DENIED_REASONS:
            return PermissionDenied(message)
        return RemoteServiceError(message, status=status)

    def _execute(self, request_fn: Callable[[Any], Any], what: str) -> Any:
        """Build a request on this thread's service and execute it, with retries."""
        return self._call(lambda: request_fn(self._svc()).execute(), what)

    def _list_all(
        self, q: str, what: str, fields: str = _LIST_FIELDS
    ) -> list[dict[str, Any]]:
        """Run ``files.list`` and follow ``nextPageToken`` to the end."""
        out: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            page = self._execute(
                lambda s, t=token: s.files().list(
                    q=q,
                    pageSize=self._page_size,
                    pageToken=t,
                    fields=fields,
                    orderBy="createdTime",
                    spaces="drive",
                ),
                what,
            )
            out.extend(page.get("files", []))
            token = page.get("nextPageToken")
            if not token:
                return out

    def _allowed_peer(self, email: str) -> bool:
        return email == self.identity or self._allowed is None or email in self._allowed

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
            lambda: (
                self._svc().files().create(body=body, fields=_FILE_FIELDS).execute()
            ),
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

    # -- primitives ------------------------------------------------------------------------------
    def put(self, key: str, data: bytes) -> None:
        """Upload ``data`` under ``key`` into this identity's channel folder.

        Raises
        ------
        PermissionDenied
            If this identity is not a party of the key, or the other party is not
            in ``allowed_peers``.
        RemoteServiceError
            If Drive keeps failing after the retries.
        """
        self._check_open()
        _, other = self._parties_for(check_key(key))
        if not self._allowed_peer(other):
            raise PermissionDenied(f"{other} is not an allowed peer")
        data = bytes(data)
        with self._key_locks[hash(key) % len(self._key_locks)]:
            for attempt in range(2):
                cid = self._write_channel(other, create=True)
                assert cid is not None
                try:
                    self._put_in(cid, key, data)
                    break
                except MessageNotFound:
                    if attempt:
                        raise
                    # The cached channel folder is gone: forget it and recreate.
                    self._forget_channel(cid)
                    with self._lock:
                        self._root_id = None
        if not _is_heartbeat(key):  # a beat is not work: polling stays slow
            self._activity.set()

    def _put_in(self, cid: str, key: str, data: bytes) -> None:
        with self._lock:
            channel = self._channels.get(cid)
            loaded = cid in self._loaded
            entry = self._index.get((cid, key))
        if channel is None:  # forgotten meanwhile (its folder was removed)
            raise MessageNotFound(f"channel folder {cid} is gone")
        if entry is None and not loaded:
            # Once per channel: afterwards my own index is authoritative for it.
            self._list_channel(channel)
            with self._lock:
                entry = self._index.get((cid, key))
        result: dict[str, Any] | None = None
        if entry is not None:
            try:
                result = self._upload(data, key, cid, file_id=entry.file_id)
            except MessageNotFound:
                self._drop_entry((cid, key))  # deleted behind our back: create anew
        if result is None:
            result = self._upload(data, key, cid, file_id=None)
        if result.get("md5Checksum") not in (None, hashlib.md5(data).hexdigest()):
            raise RemoteServiceError(f"upload of {key!r} was corrupted (md5 mismatch)")
        new = self._entry_for(channel, result)
        if new is not None:
            self._remember(new)

    def _upload(
        self, data: bytes, key: str, cid: str, *, file_id: str | None
    ) -> dict[str, Any]:
        resumable = len(data) > SIMPLE_UPLOAD_LIMIT
        if not resumable:
            media = _bytes_upload(data, self._chunk_size, resumable=False)
            if file_id is None:

                def recover() -> dict[str, Any] | None:
                    # A lost response to a create that did happen: do not create twice.
                    with self._lock:
                        channel = self._channels.get(cid)
                    if channel is None:
                        return None
                    md5 = hashlib.md5(data).hexdigest()
                    found = [e for e in self._find(channel, key) if e.md5 == md5]
                    if not found:
                        return None
                    return self._execute(
                        lambda s: s.files().get(
                            fileId=found[0].file_id, fields=_FILE_FIELDS
                        ),
                        "get file",
                    )

                body = {
                    "name": key,
                    "parents": [cid],
                    "mimeType": "application/octet-stream",
                }
                return self._call(
                    lambda: (
                        self._svc()
                        .files()
                        .create(body=body, media_body=media, fields=_FILE_FIELDS)
                        .execute()
                    ),
                    "upload",
                    recover=recover,
                )
            return self._call(
                lambda: (
                    self._svc()
                    .files()
                    .update(fileId=file_id, media_body=media, fields=_FILE_FIELDS)
                    .execute()
                ),
                "upload",
            )
        # Resumable: the session URL survives failures, so each chunk is retried on
        # its own and a retried final chunk cannot create a second file.
        media = _bytes_upload(data, self._chunk_size, resumable=True)
        svc = self._svc()
        if file_id is None:
            body = {
                "name": key,
                "parents": [cid],
                "mimeType": "application/octet-stream",
            }
            request = svc.files().create(
                body=body, media_body=media, fields=_FILE_FIELDS
            )
        else:
            request = svc.files().update(
                fileId=file_id, media_body=media, fields=_FILE_FIELDS
            )
        response = None
        while response is None:
            _, response = self._call(
                request.next_chunk, "resumable upload", resumable=True
            )
        return response

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
                    fileId=fid, fields=_FILE_FIELDS
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

    def delete(self, key: str) -> None:
        """Delete this identity's file under ``key``.

        Drive lets only a file's owner delete it, so a key that exists only in the
        peer's channel is left alone (silently): the peer must delete it.
        """
        self._check_open()
        check_key(key)
        try:
            _, other = self._parties_for(key)
        except PermissionDenied:
            return
        for file_id in self._my_file_ids(key, other):
            self._delete_id(file_id, key)

    def _my_file_ids(self, key: str, other: str) -> list[str]:
        cid = self._write_channel(other, create=False)
        if cid is None:
            return []
        with self._lock:
            channel = self._channels.get(cid)
            entry = self._index.get((cid, key))
        if entry is not None:
            return [entry.file_id]
        if channel is None:
            return []
        return [e.file_id for e in self._find(channel, key)]

    def _delete_id(self, file_id: str, key: str) -> None:
        try:
            self._execute(lambda s: s.files().delete(fileId=file_id), "delete")
        except (MessageNotFound, PermissionDenied):
            pass  # already gone, or not ours to delete
        self._forget_file(file_id)

    def delete_many(self, keys: Iterable[str]) -> None:
        """Delete several of this identity's keys with batched ``files.delete`` calls."""
        self._check_open()
        targets: list[tuple[str, str]] = []
        for key in keys:
            check_key(key)
            try:
                _, other = self._parties_for(key)
            except PermissionDenied:
                continue
            targets += [(fid, key) for fid in self._my_file_ids(key, other)]
        for start in range(0, len(targets), 100):  # Drive's per-batch cap
            self._delete_batch(targets[start : start + 100])

    def _delete_batch(self, targets: Sequence[tuple[str, str]]) -> None:
        failed: list[tuple[str, str]] = []

        def callback(request_id: str, _response: Any, exc: Exception | None) -> None:
            fid, key = targets[int(request_id)]
            status = _http_status(exc) if exc is not None else 200
            if (
                exc is None
                or status == 404
                or (
                    status == 403 and _http_reason(exc) == "insufficientFilePermissions"
                )
            ):
                self._forget_file(fid)
            else:
                failed.append((fid, key))

        def run() -> None:
            svc = self._svc()
            batch = svc.new_batch_http_request(callback=callback)
            for i, (fid, _) in enumerate(targets):
                batch.add(svc.files().delete(fileId=fid), request_id=str(i))
            batch.execute()

        self._call(run, "batch delete")
        for fid, key in failed:  # throttled parts: retry one by one with backoff
            self._delete_id(fid, key)

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
        super().prepare(app, endpoint, peers)

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

    # -- watching ----------------------------------------------------------------------------------
    def watch(self, prefix: str, callback: KeyCallback) -> Watch:
        """Call ``callback(key)`` for files created or replaced under ``prefix``.

        Callbacks run on the transport's poller thread.
        """
        self._check_open()
        handle = Watch(prefix.strip("/"), callback)
        self._ensure_root()
        with self._setup_lock:
            with self._lock:
                need_start = self._page_token is None
            if need_start:
                # Both before returning: every change after this point is in the
                # feed, and the baseline holds only files that predate the watch.
                token = self._execute(
                    lambda s: s.changes().getStartPageToken(),
                    "changes.getStartPageToken",
                )["startPageToken"]
                self._snapshot_baseline()
                with self._lock:
                    self._page_token = str(token)
        with self._lock:
            self._watches.append(handle)
            if self._poller is None:
                self._poller = threading.Thread(
                    target=self._poll_loop,
                    name=f"gdrive-poller-{self.identity}",
                    daemon=True,
                )
                self._poller.start()
        return handle

    def _fire(self, key: str) -> None:
        with self._lock:
            self._watches = [w for w in self._watches if not w.cancelled]
            watches = list(self._watches)
        for w in watches:
            try:
                w.fire(key)
            except Exception:  # a broken callback must not kill the poller
                logger.exception("watch callback for %s failed", key)

    def _notify(self, entry: _Entry, *, from_changes: bool) -> bool:
        ck = (entry.channel_id, entry.key)
        with self._lock:
            if self._notified.get(ck) == entry.marker:
                return False
            if not from_changes and self._baseline.get(ck) == entry.marker:
                return False  # existed before the watch and did not change
            self._notified[ck] = entry.marker
        self._fire(entry.key)
        return True

    def _poll_loop(self) -> None:
        delay = self._fast_poll
        self._next_reconcile = self._clock() + self._reconcile_interval
        while not self._stop.wait(delay):
            active, failed = False, False
            try:
                active = self._poll_once()
            except Exception:  # keep polling whatever happens; log loudly
                logger.warning("Drive changes poll failed; backing off", exc_info=True)
                failed = True
            if self._clock() >= self._next_reconcile:
                # Independent of changes.list, so it also covers a failing feed.
                self._next_reconcile = self._clock() + self._reconcile_interval
                try:
                    active |= self._reconcile()
                except Exception:
                    logger.warning("Drive reconciliation failed", exc_info=True)
            if active or self._activity.is_set():
                self._activity.clear()
                delay = self._fast_poll
            elif failed:
                delay = self._poll_interval
            else:
                delay = min(delay * 2, self._poll_interval)
            self._delay = delay

    def _snapshot_baseline(self) -> None:
        """Record what exists now, so reconciliation only reports what is newer."""
        self._discover(force=True)
        with self._lock:
            channels = list(self._channels.values())
        for channel in channels:
            for entry in self._list_channel(channel):
                with self._lock:
                    self._baseline[(channel.id, entry.key)] = entry.marker

    def _poll_once(self) -> bool:
        """One tick: one ``changes.list`` call for all channels (more only to page)."""
        with self._lock:
            token = self._page_token
        active = False
        while token is not None:
            try:
                page = self._execute(
                    lambda s, t=token: s.changes().list(
                        pageToken=t,
                        pageSize=1000,
                        includeRemoved=True,
                        spaces="drive",
                        fields=_CHANGE_FIELDS,
                    ),
                    "changes.list",
                )
            except (MessageNotFound, RemoteServiceError) as exc:
                if isinstance(exc, RemoteServiceError) and exc.status != 400:
                    raise
                # The token is no longer valid: start afresh and reconcile.
                fresh = self._execute(
                    lambda s: s.changes().getStartPageToken(),
                    "changes.getStartPageToken",
                )
                with self._lock:
                    self._page_token = str(fresh["startPageToken"])
                self._next_reconcile = 0.0
                break
            for change in page.get("changes", []):
                active |= self._apply_change(change)
            next_token = page.get("nextPageToken")
            if next_token:
                token = next_token
                continue
            with self._lock:
                self._page_token = str(page.get("newStartPageToken") or token)
            token = None
        with self._lock:
            self.poll_count += 1
        return active

    def _apply_change(self, change: dict[str, Any]) -> bool:
        file_id = str(change.get("fileId", ""))
        f = change.get("file")
        if change.get("removed") or f is None or f.get("trashed"):
            with self._lock:
                is_channel = file_id in self._channels
            if is_channel:
                self._forget_channel(file_id)
            self._forget_file(file_id)
            return False
        if f.get("mimeType") == FOLDER_MIME:
            channel = self._as_incoming_channel(f)
            if channel is None or not self._register(channel):
                return False
            # A newly shared channel: its files may predate the share.
            for entry in self._list_channel(channel):
                self._notify(entry, from_changes=False)
            return True
        active = False
        for parent in f.get("parents") or []:
            channel = self._channel_of(str(parent))
            if channel is None:
                continue
            entry = self._entry_for(channel, f)
            if entry is None:
                continue
            self._remember(entry)
            fired = self._notify(entry, from_changes=True)
            # A peer's heartbeat is delivered to watchers but does not switch
            # polling to the fast pace: beats cost the reader no extra request.
            active |= fired and not _is_heartbeat(entry.key)
        return active

    def _channel_of(self, folder_id: str) -> _Channel | None:
        """Return the channel a folder is, looking unknown folders up once."""
        with self._lock:
            if folder_id in self._channels:
                return self._channels[folder_id]
            if folder_id in self._not_channels:
                return None
        try:
            f = self._execute(
                lambda s: s.files().get(fileId=folder_id, fields=_FILE_FIELDS),
                "get folder",
            )
        except (MessageNotFound, PermissionDenied):
            f = {}
        channel = self._as_incoming_channel(f) if f else None
        if channel is None:
            with self._lock:
                self._not_channels.add(folder_id)
            return None
        self._register(channel)
        return channel

    def _reconcile(self) -> bool:
        """Safety net: list every channel and notify what changes.list missed."""
        active = bool(self._discover(force=True))
        with self._lock:
            channels = list(self._channels.values())
        for channel in channels:
            for entry in self._list_channel(channel):
                active |= self._notify(entry, from_changes=False)
        return active

    # -- lifecycle ----------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the poller (joined within 1 s) and close HTTP connections; idempotent."""
        if self._closed:
            return
        super().close()
        self._stop.set()
        poller = self._poller
        if poller is not None and poller is not threading.current_thread():
            poller.join(timeout=1.0)
        with self._lock:
            services, self._services = self._services, []
            for w in self._watches:
                w.cancel()
            self._watches.clear()
        for svc in services:
            try:
                svc.close()
            except Exception:  # noqa: BLE001 - best effort on shutdown
                pass

    @property
    def current_poll_delay(self) -> float:
        """Seconds the poller waits before its next ``changes.list`` call."""
        return self._delay

    @property
    def poller_alive(self) -> bool:
        """Whether the background poller thread is running."""
        poller = self._poller
        return poller is not None and poller.is_alive()

    def __repr__(self) -> str:
        return f"GDriveTransport(identity={self.identity!r}, root={self._root_name!r})"


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
