"""Drive API calls: one service per thread, retries with backoff, error mapping."""

from __future__ import annotations

import http.client
import io
import json
import logging
import random
import ssl
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from syft_flwr.errors import (
    MessageNotFound,
    PermissionDenied,
    RemoteServiceError,
    TransportError,
)

__all__ = ["DriveApi"]

logger = logging.getLogger("syft_flwr.transports.gdrive")

T = TypeVar("T")

#: Bodies above this size use a resumable upload (Drive's limit for simple ones).
SIMPLE_UPLOAD_LIMIT = 5 * 1024 * 1024
CHUNK_GRANULARITY = 256 * 1024
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
FILE_FIELDS = (
    "id,name,mimeType,parents,owners(emailAddress),md5Checksum,size,"
    "modifiedTime,createdTime,trashed"
)
#: Ids fetched per ``files.generateIds`` call (one request serves this many creates).
ID_BATCH = 50
LIST_FIELDS = f"nextPageToken,files({FILE_FIELDS})"
CHANGE_FIELDS = (
    f"nextPageToken,newStartPageToken,changes(fileId,removed,file({FILE_FIELDS}))"
)
#: Socket-level failures of a keep-alive connection: safe to retry.
_NETWORK_ERRORS: tuple[type[BaseException], ...] = (
    ConnectionError,  # ConnectionResetError, BrokenPipeError, RemoteDisconnected, ...
    http.client.HTTPException,  # BadStatusLine, IncompleteRead, ...
    TimeoutError,  # socket.timeout is an alias of TimeoutError
    ssl.SSLError,
)


def http_status(exc: Exception) -> int:
    resp = getattr(exc, "resp", None)
    try:
        return int(getattr(resp, "status", 0) or 0)
    except (TypeError, ValueError):
        return 0


def http_reason(exc: Exception) -> str:
    details = getattr(exc, "error_details", None)
    if isinstance(details, list) and details and isinstance(details[0], dict):
        return str(details[0].get("reason", ""))
    content = getattr(exc, "content", b"") or b""
    try:
        data = json.loads(content)
        return str(data["error"]["errors"][0]["reason"])
    except (ValueError, KeyError, IndexError, TypeError):
        return ""


def bytes_upload(data: bytes, chunk_size: int, resumable: bool) -> Any:
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


class DriveApi:
    """Runs Drive calls for the transport: per-thread services, retries, ids.

    It owns the services it built (one per thread, because ``httplib2.Http``
    is not thread-safe) and the pool of ids from ``files.generateIds``; it
    knows nothing of channels or keys.

    Parameters
    ----------
    factory:
        Returns a new googleapiclient Drive v3 ``Resource``.
    sleep:
        The backoff sleep (injected by tests).
    max_retries:
        Retries per call before :class:`RemoteServiceError` is raised.
    page_size:
        ``pageSize`` of ``files.list`` calls.
    """

    def __init__(
        self,
        factory: Callable[[], Any],
        *,
        sleep: Callable[[float], None],
        max_retries: int,
        page_size: int,
    ) -> None:
        self._factory = factory
        self._sleep = sleep
        self._max_retries = max_retries
        self._page_size = page_size
        self._rng = random.Random()
        self._local = threading.local()
        self._lock = threading.Lock()  # guards the two lists below; never over I/O
        self._services: list[Any] = []
        self._id_pool: list[str] = []  # ids from files.generateIds, unused yet

    def close(self) -> None:
        """Close every thread's HTTP connections (best effort); idempotent."""
        with self._lock:
            services, self._services = self._services, []
        for svc in services:
            try:
                svc.close()
            except Exception:  # noqa: BLE001 - best effort on shutdown
                pass

    # -- plumbing -----------------------------------------------------------------------
    def svc(self) -> Any:
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

    def call(
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
                status = http_status(exc)
                reason = http_reason(exc)
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
            self._wait_before_retry(attempt, what, status, last)
            if recover is not None:
                recovered = self._try_recover(recover)
                if recovered is not None:
                    return recovered

    def _wait_before_retry(
        self, attempt: int, what: str, status: int | None, last: BaseException
    ) -> None:
        """Sleep before retry ``attempt``; raise once the retries are used up."""
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

    def new_id(self) -> str:
        """Return a file id from ``files.generateIds`` (fetched ``ID_BATCH`` at a time)."""
        with self._lock:
            if self._id_pool:
                return str(self._id_pool.pop())
        got = self.execute(
            lambda s: s.files().generateIds(count=ID_BATCH, space="drive"),
            "files.generateIds",
        )
        ids = [str(i) for i in got.get("ids", [])]
        if not ids:
            raise RemoteServiceError("files.generateIds returned no ids")
        with self._lock:
            self._id_pool.extend(ids[1:])
        return ids[0]

    def get_meta(self, file_id: str, what: str = "get file") -> dict[str, Any]:
        return dict(
            self.execute(
                lambda s: s.files().get(fileId=file_id, fields=FILE_FIELDS), what
            )
        )

    def create(
        self, body: dict[str, Any], what: str, media: Any = None
    ) -> dict[str, Any]:
        """``files.create`` of ``body`` (which carries a generated ``id``) exactly once.

        A lost response makes the HTTP client or our retry send the create again;
        with the id fixed beforehand Drive answers the repeat with 409 instead of
        storing a second file, and the file is then fetched by id (which, unlike
        search, is strongly consistent).
        """
        file_id = str(body["id"])

        def recover() -> dict[str, Any] | None:
            try:
                return self.get_meta(file_id)
            except MessageNotFound:
                return None

        try:
            return dict(
                self.call(
                    lambda: (
                        self.svc()
                        .files()
                        .create(body=body, media_body=media, fields=FILE_FIELDS)
                        .execute()
                    ),
                    what,
                    recover=recover,
                )
            )
        except RemoteServiceError as exc:
            if exc.status != 409:
                raise
            return self.get_meta(file_id)

    def execute(self, request_fn: Callable[[Any], Any], what: str) -> Any:
        """Build a request on this thread's service and execute it, with retries."""
        return self.call(lambda: request_fn(self.svc()).execute(), what)

    def list_all(
        self, q: str, what: str, fields: str = LIST_FIELDS
    ) -> list[dict[str, Any]]:
        """Run ``files.list`` and follow ``nextPageToken`` to the end."""
        out: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            page = self.execute(
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

    def delete_batch(
        self, targets: Sequence[tuple[str, str]], gone: Callable[[str], None]
    ) -> list[tuple[str, str]]:
        """Delete ``(file id, key)`` targets in one batch request.

        ``gone(file_id)`` is called for each file that is deleted or was already
        gone; returns the targets whose part failed (throttled), for the caller
        to retry one by one with backoff.
        """
        failed: list[tuple[str, str]] = []

        def callback(request_id: str, _response: Any, exc: Exception | None) -> None:
            fid, key = targets[int(request_id)]
            status = http_status(exc) if exc is not None else 200
            if (
                exc is None
                or status == 404
                or (status == 403 and http_reason(exc) == "insufficientFilePermissions")
            ):
                gone(fid)
            else:
                failed.append((fid, key))

        def run() -> None:
            svc = self.svc()
            batch = svc.new_batch_http_request(callback=callback)
            for i, (fid, _) in enumerate(targets):
                batch.add(svc.files().delete(fileId=fid), request_id=str(i))
            batch.execute()

        self.call(run, "batch delete")
        return failed
