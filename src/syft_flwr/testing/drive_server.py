"""A Google Drive v3-compatible HTTP server on loopback, for offline tests.

:class:`FakeDriveServer` speaks enough of Drive v3 that the *real*
``google-api-python-client`` talks to it unmodified: several users (the bearer
token ``fake:<email>`` is the identity), ownership and inherited folder
permissions, media/multipart/resumable uploads, ranged downloads, ``files.list``
with a real ``q=`` parser (token-prefix ``contains``), paging, ``changes``,
``/batch/drive/v3``, long-query ``POST`` overrides, fault injection and a
name-index lag. Example::

    with FakeDriveServer() as drive:
        alice = drive.service("alice@example.com")
        folder = alice.files().create(
            body={"name": "inbox", "mimeType": "application/vnd.google-apps.folder"}
        ).execute()
        drive.inject_faults([(429, None)])  # the next request gets a 429

The module imports only the standard library; :meth:`FakeDriveServer.service`
imports googleapiclient lazily. The pieces are split by concern: the ``q=``
language lives in :mod:`syft_flwr.testing._drive_query`, the data model in
:mod:`syft_flwr.testing._drive_store` (errors in ``_drive_errors``, resumable
uploads in ``_drive_upload``), the discovery document, ``fields`` masks and
multipart bodies in :mod:`syft_flwr.testing._drive_http`, routing and HTTP
here.

Size: over 400 lines because the route table and its handlers are one piece
(each route names a handler method of ``_DriveApp``); the store, query language,
errors, uploads and HTTP bodies already live in their own modules.
"""

from __future__ import annotations

import base64
import collections
import json
import re
import secrets
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from syft_flwr.testing._drive_http import (
    apply_fields,
    check_fields,
    parse_fields,
    rerooted_discovery,
    split_headers,
    split_multipart,
)
from syft_flwr.testing._drive_query import QuerySyntaxError, parse_query
from syft_flwr.testing._drive_store import (
    FOLDER_MIME,
    ChangeEntry,
    DriveApiError,
    DriveStore,
    FileRecord,
    rfc3339,
)

__all__ = ["FOLDER_MIME", "FakeDriveServer"]

#: Default ``reason`` of an injected fault, per status (what Google sends).
_DEFAULT_REASONS = {
    400: "badRequest",
    401: "authError",
    403: "forbidden",
    404: "notFound",
    408: "requestTimeout",
    429: "rateLimitExceeded",
    500: "backendError",
    502: "badGateway",
    503: "backendError",
    504: "gatewayTimeout",
}

_MAX_PAGE_SIZE = 1000
_MAX_BATCH = 100

_DEFAULT_FILE_FIELDS = "kind,id,name,mimeType"
_DEFAULT_MASKS = {
    "files.list": f"kind,incompleteSearch,nextPageToken,files({_DEFAULT_FILE_FIELDS})",
    "changes.list": "kind,nextPageToken,newStartPageToken,"
    f"changes(kind,type,changeType,time,removed,fileId,file({_DEFAULT_FILE_FIELDS}))",
    "permissions.list": "kind,nextPageToken,permissions(kind,id,type,role)",
    "permission": "kind,id,type,role",
    "file": _DEFAULT_FILE_FIELDS,
}
#: Response schema (in the discovery document) per method, for ``fields`` checks.
_SCHEMAS = {
    "about.get": "About",
    "files.list": "FileList",
    "files.get": "File",
    "files.generateIds": "GeneratedIds",
    "files.create": "File",
    "files.update": "File",
    "upload.put": "File",
    "changes.list": "ChangeList",
    "changes.getStartPageToken": "StartPageToken",
    "permissions.list": "PermissionList",
    "permissions.get": "Permission",
    "permissions.create": "Permission",
    "permissions.update": "Permission",
}


# -- requests and responses ---------------------------------------------------------


@dataclass
class _Request:
    method: str
    path: str
    params: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes
    host: str


@dataclass
class _Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    #: "drop" closes the connection without answering; "reset" also sends a RST.
    drop: str | None = None


def _json_response(status: int, obj: Any) -> _Response:
    return _Response(
        status,
        json.dumps(obj).encode(),
        {"Content-Type": "application/json; charset=UTF-8"},
    )


def _error_response(err: DriveApiError) -> _Response:
    resp = _json_response(err.status, err.to_json())
    if err.status == 401:
        resp.headers["WWW-Authenticate"] = 'Bearer realm="https://accounts.google.com/"'
    return resp


def _bool_param(params: dict[str, str], name: str, default: bool) -> bool:
    value = params.get(name)
    if value is None:
        return default
    if value.lower() not in ("true", "false"):
        raise DriveApiError(
            400, "invalid", f"Invalid boolean for {name}.", location=name
        )
    return value.lower() == "true"


def _page_size(params: dict[str, str], default: int = 100) -> int:
    raw = params.get("pageSize")
    if raw is None:
        return default
    try:
        size = int(raw)
    except ValueError:
        size = 0
    if size < 1:
        raise DriveApiError(
            400, "invalid", f"Invalid pageSize: {raw}.", location="pageSize"
        )
    return min(size, _MAX_PAGE_SIZE)


def _json_body(req: _Request) -> dict[str, Any]:
    if not req.body.strip():
        return {}
    try:
        value = json.loads(req.body)
    except ValueError as exc:
        raise DriveApiError(400, "parseError", "Parse Error") from exc
    if not isinstance(value, dict):
        raise DriveApiError(400, "parseError", "Parse Error")
    return value


@dataclass(frozen=True)
class _Fault:
    status: int
    reason: str | None
    methods: frozenset[str] | None


@dataclass(frozen=True)
class _Route:
    method: str
    pattern: re.Pattern[str]
    name: str
    handler: str


def _route(method: str, pattern: str, name: str, handler: str) -> _Route:
    return _Route(method, re.compile(pattern + r"\Z"), name, handler)


_FILE = r"(?P<fid>[^/]+)"
_ROUTES = [
    _route("GET", r"/drive/v3/about", "about.get", "_about"),
    _route("GET", r"/drive/v3/files", "files.list", "_files_list"),
    _route("POST", r"/drive/v3/files", "files.create", "_files_create"),
    _route(
        "DELETE", r"/drive/v3/files/trash", "files.emptyTrash", "_files_empty_trash"
    ),
    _route("GET", r"/drive/v3/files/generateIds", "files.generateIds", "_generate_ids"),
    _route("GET", rf"/drive/v3/files/{_FILE}", "files.get", "_files_get"),
    _route("PATCH", rf"/drive/v3/files/{_FILE}", "files.update", "_files_update"),
    _route("DELETE", rf"/drive/v3/files/{_FILE}", "files.delete", "_files_delete"),
    _route(
        "GET", rf"/drive/v3/files/{_FILE}/permissions", "permissions.list", "_perm_list"
    ),
    _route(
        "POST",
        rf"/drive/v3/files/{_FILE}/permissions",
        "permissions.create",
        "_perm_create",
    ),
    _route(
        "GET",
        rf"/drive/v3/files/{_FILE}/permissions/(?P<pid>[^/]+)",
        "permissions.get",
        "_perm_get",
    ),
    _route(
        "PATCH",
        rf"/drive/v3/files/{_FILE}/permissions/(?P<pid>[^/]+)",
        "permissions.update",
        "_perm_update",
    ),
    _route(
        "DELETE",
        rf"/drive/v3/files/{_FILE}/permissions/(?P<pid>[^/]+)",
        "permissions.delete",
        "_perm_delete",
    ),
    _route(
        "GET",
        r"/drive/v3/changes/startPageToken",
        "changes.getStartPageToken",
        "_start_token",
    ),
    _route("GET", r"/drive/v3/changes", "changes.list", "_changes_list"),
    _route("POST", r"/upload/drive/v3/files", "files.create", "_upload_create"),
    _route(
        "PATCH", rf"/upload/drive/v3/files/{_FILE}", "files.update", "_upload_update"
    ),
    _route("PUT", r"/upload/drive/v3/files(?:/[^/]+)?", "upload.put", "_upload_put"),
    _route("POST", r"/batch/drive/v3", "batch", "_batch"),
    _route("GET", r"/discovery/v1/apis/drive/v3/rest", "discovery", "_discovery"),
    _route("POST", r"/token", "oauth.token", "_token"),
]
#: Routes served without a bearer token.
_ANONYMOUS = {"upload.put", "discovery", "oauth.token"}
#: Routes that do not touch the store as a whole (batch locks per part).
_UNLOCKED = {"batch", "discovery", "oauth.token"}


class _DriveApp:
    """Maps requests onto the store; HTTP-agnostic so batch parts reuse it."""

    def __init__(self, server: FakeDriveServer) -> None:
        self.server = server
        self.store = server.store

    # -- dispatch -----------------------------------------------------------------
    def handle(self, req: _Request, *, outer_user: str | None = None) -> _Response:
        inner = outer_user is not None
        route, groups = self._match(req)
        name = route.name if route else "unknown"
        lost = False
        if not inner:
            fault = self.server._take_fault(name)
            if fault is not None and fault.status == 0 and fault.reason == "lost":
                lost = True  # served below, then the response is lost
            elif fault is not None:
                self.server._record(name, None, fault.status)
                return self._fault_response(fault)
        user: str | None = None
        try:
            if route is None:
                raise DriveApiError(
                    404, "notFound", f"Not Found: {req.method} {req.path}"
                )
            user = self._authenticate(req, name, outer_user)
            if inner and req.params.get("alt") == "media":
                raise DriveApiError(
                    400, "badRequest", "Media requests are not batchable."
                )
            handler: Callable[..., _Response] = getattr(self, route.handler)
            if name in _UNLOCKED:
                resp = handler(req, user, **groups)
            else:
                with self.store.lock:
                    resp = handler(req, user, **groups)
        except DriveApiError as err:
            resp = _error_response(err)
        self.server._record(name, user, resp.status)
        if lost:
            return _Response(0, drop="drop")
        return resp

    @staticmethod
    def _match(req: _Request) -> tuple[_Route | None, dict[str, str]]:
        for route in _ROUTES:
            if route.method != req.method:
                continue
            m = route.pattern.match(req.path)
            if m:
                return route, {k: unquote(v) for k, v in m.groupdict().items()}
        return None, {}

    @staticmethod
    def _fault_response(fault: _Fault) -> _Response:
        if fault.status == 0:
            return _Response(0, drop=fault.reason or "drop")
        reason = fault.reason or _DEFAULT_REASONS.get(fault.status, "backendError")
        domain = (
            "usageLimits"
            if "RateLimit" in reason or "rateLimit" in reason
            else "global"
        )
        err = DriveApiError(
            fault.status, reason, f"Injected fault: {reason}", domain=domain
        )
        return _error_response(err)

    def _authenticate(self, req: _Request, name: str, outer_user: str | None) -> str:
        header = req.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and token.startswith("fake:") and "@" in token:
            user = token[5:].strip().lower()
            with self.store.lock:
                self.store.register_user(user)
            return user
        if outer_user:
            return outer_user
        if name in _ANONYMOUS:
            return ""
        raise DriveApiError(
            401,
            "authError",
            "Request had invalid authentication credentials. Expected OAuth 2 access "
            "token, login cookie or other valid authentication credential.",
            location="Authorization",
            location_type="header",
        )

    def _render(
        self, name: str, obj: dict[str, Any], req: _Request, default: str
    ) -> _Response:
        text = req.params.get("fields") or default
        mask = parse_fields(text)
        check_fields(mask, _SCHEMAS.get(name), text)
        return _json_response(200, apply_fields(obj, mask))

    def _file_response(
        self, name: str, rec: FileRecord, req: _Request, user: str
    ) -> _Response:
        return self._render(
            name, self.store.file_resource(rec, user), req, _DEFAULT_MASKS["file"]
        )

    # -- about / files ---------------------------------------------------------------
    def _about(self, req: _Request, user: str) -> _Response:
        if not req.params.get("fields"):
            raise DriveApiError(
                400,
                "required",
                "The 'fields' parameter is required for this method.",
                location="fields",
            )
        usage = sum(r.size for r in self.store.files.values() if r.owner == user)
        about = {
            "kind": "drive#about",
            "user": self.store.user_resource(user, user),
            "storageQuota": {
                "limit": str(15 * 1024**3),
                "usage": str(usage),
                "usageInDrive": str(usage),
                "usageInDriveTrash": "0",
            },
            "maxUploadSize": "5497558138880",
            "canCreateDrives": False,
        }
        return self._render("about.get", about, req, "")

    def _files_list(self, req: _Request, user: str) -> _Response:
        q = req.params.get("q")
        try:
            node = parse_query(q) if q else None
        except QuerySyntaxError as exc:
            raise DriveApiError(
                400, "invalid", f"Invalid Value: {exc}", location="q"
            ) from exc
        recs, token = self.store.list_files(
            user,
            node,
            order_by=req.params.get("orderBy"),
            page_size=_page_size(req.params),
            page_token=req.params.get("pageToken"),
        )
        out: dict[str, Any] = {
            "kind": "drive#fileList",
            "incompleteSearch": False,
            "files": [self.store.file_resource(r, user) for r in recs],
        }
        if token:
            out["nextPageToken"] = token
        return self._render("files.list", out, req, _DEFAULT_MASKS["files.list"])

    def _files_create(self, req: _Request, user: str) -> _Response:
        rec = self.store.create(user, _json_body(req))
        return self._file_response("files.create", rec, req, user)

    def _generate_ids(self, req: _Request, user: str) -> _Response:
        try:
            count = int(req.params.get("count") or 10)
        except ValueError as exc:
            raise DriveApiError(400, "invalid", "Invalid count.") from exc
        if not 1 <= count <= 1000:
            raise DriveApiError(400, "invalid", "count must be in [1, 1000].")
        space = req.params.get("space") or "drive"
        if space != "drive":
            raise DriveApiError(
                400, "invalid", f"Invalid space: {space}", location="space"
            )
        ids = self.store.generate_ids(count)
        out = {"kind": "drive#generatedIds", "space": space, "ids": ids}
        return self._render("files.generateIds", out, req, "kind,space,ids")

    def _files_get(self, req: _Request, user: str, fid: str) -> _Response:
        rec = self.store.get_visible(user, fid)
        if req.params.get("alt") == "media":
            return self._download(req, rec)
        return self._file_response("files.get", rec, req, user)

    def _download(self, req: _Request, rec: FileRecord) -> _Response:
        if rec.is_folder or rec.content is None:
            raise DriveApiError(
                403,
                "fileNotDownloadable",
                "Only files with binary content can be downloaded.",
                location="alt",
            )
        data = rec.content
        total = len(data)
        base = {
            "Content-Type": rec.mime_type,
            "ETag": f'"{rec.md5}"',
            "X-Goog-Hash": f"md5={rec.md5}",
        }
        spec = req.headers.get("range")
        if not spec:
            return _Response(200, data, base)
        m = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", spec)
        if m is None or (not m.group(1) and not m.group(2)):
            return _Response(
                200, data, base
            )  # an unparseable Range is ignored (RFC 9110)
        if m.group(1):
            first = int(m.group(1))
            last = int(m.group(2)) if m.group(2) else total - 1
        else:  # suffix range: the last N bytes
            first, last = max(total - int(m.group(2)), 0), total - 1
        if first >= total or first > last:
            err = DriveApiError(
                416, "requestedRangeNotSatisfiable", "Request range not satisfiable"
            )
            resp = _error_response(err)
            resp.headers["Content-Range"] = f"bytes */{total}"
            return resp
        last = min(last, total - 1)
        headers = {**base, "Content-Range": f"bytes {first}-{last}/{total}"}
        return _Response(206, data[first : last + 1], headers)

    def _files_update(self, req: _Request, user: str, fid: str) -> _Response:
        rec = self.store.update(
            user,
            fid,
            _json_body(req),
            add_parents=_ids(req.params.get("addParents")),
            remove_parents=_ids(req.params.get("removeParents")),
        )
        return self._file_response("files.update", rec, req, user)

    def _files_delete(self, req: _Request, user: str, fid: str) -> _Response:
        self.store.delete(user, fid)
        return _Response(204)

    def _files_empty_trash(self, req: _Request, user: str) -> _Response:
        self.store.empty_trash(user)
        return _Response(204)

    # -- uploads -----------------------------------------------------------------------
    def _media_parts(self, req: _Request) -> tuple[dict[str, Any], bytes, str]:
        kind = req.params.get("uploadType")
        ctype = req.headers.get("content-type", "application/octet-stream")
        if kind == "media":
            return {}, req.body, ctype.split(";")[0].strip()
        if kind == "multipart":
            parts = split_multipart(req.body, ctype)
            if len(parts) != 2:
                raise DriveApiError(
                    400, "badContent", "Multipart upload needs 2 parts."
                )
            (_, meta_raw), (media_headers, media) = parts
            try:
                meta = json.loads(meta_raw or b"{}")
            except ValueError as exc:
                raise DriveApiError(400, "parseError", "Parse Error") from exc
            media_type = media_headers.get("content-type", "application/octet-stream")
            return meta, media, media_type.split(";")[0].strip()
        raise DriveApiError(
            400, "invalid", f"Invalid uploadType: {kind!r}.", location="uploadType"
        )

    def _start_resumable(self, req: _Request, user: str, fid: str | None) -> _Response:
        total_raw = req.headers.get("x-upload-content-length")
        try:
            total = int(total_raw) if total_raw else None
        except ValueError as exc:
            raise DriveApiError(
                400, "badRequest", "Bad X-Upload-Content-Length"
            ) from exc
        session = self.store.start_upload(
            user,
            fid,
            _json_body(req),
            req.headers.get("x-upload-content-type", "application/octet-stream"),
            total,
            dict(req.params),
        )
        path = "/upload/drive/v3/files" + (f"/{quote(fid)}" if fid else "")
        location = (
            f"http://{req.host}{path}?uploadType=resumable&upload_id={session.id}"
        )
        return _Response(
            200, b"", {"Location": location, "X-GUploader-UploadID": session.id}
        )

    def _upload_create(self, req: _Request, user: str) -> _Response:
        if req.params.get("uploadType") == "resumable":
            return self._start_resumable(req, user, None)
        meta, media, media_type = self._media_parts(req)
        rec = self.store.create(user, meta, media, media_type)
        return self._file_response("files.create", rec, req, user)

    def _upload_update(self, req: _Request, user: str, fid: str) -> _Response:
        if req.params.get("uploadType") == "resumable":
            return self._start_resumable(req, user, fid)
        meta, media, media_type = self._media_parts(req)
        rec = self.store.update(
            user,
            fid,
            meta,
            add_parents=_ids(req.params.get("addParents")),
            remove_parents=_ids(req.params.get("removeParents")),
            content=media,
            media_mime=media_type,
        )
        return self._file_response("files.update", rec, req, user)

    def _upload_put(self, req: _Request, user: str) -> _Response:
        upload_id = req.params.get("upload_id", "")
        session, rec = self.store.upload_chunk(
            upload_id, req.headers.get("content-range"), req.body
        )
        if rec is not None:
            fields = session.params.get("fields") or _DEFAULT_MASKS["file"]
            mask = parse_fields(fields)
            body = apply_fields(self.store.file_resource(rec, session.user), mask)
            return _json_response(200, body)
        received = len(session.data)
        headers = {"X-GUploader-UploadID": session.id}
        if received:
            headers["Range"] = f"bytes=0-{received - 1}"
        return _Response(308, b"", headers)

    # -- permissions ----------------------------------------------------------------------
    def _perm_list(self, req: _Request, user: str, fid: str) -> _Response:
        perms = self.store.permissions_of(user, fid)
        out = {
            "kind": "drive#permissionList",
            "permissions": [self.store.permission_resource(p) for p in perms],
        }
        return self._render(
            "permissions.list", out, req, _DEFAULT_MASKS["permissions.list"]
        )

    def _perm_create(self, req: _Request, user: str, fid: str) -> _Response:
        _bool_param(
            req.params, "sendNotificationEmail", True
        )  # accepted; no mail is sent
        perm = self.store.create_permission(user, fid, _json_body(req))
        return self._render(
            "permissions.create",
            self.store.permission_resource(perm),
            req,
            _DEFAULT_MASKS["permission"],
        )

    def _perm_get(self, req: _Request, user: str, fid: str, pid: str) -> _Response:
        perm = self.store.find_permission(user, fid, pid)
        return self._render(
            "permissions.get",
            self.store.permission_resource(perm),
            req,
            _DEFAULT_MASKS["permission"],
        )

    def _perm_update(self, req: _Request, user: str, fid: str, pid: str) -> _Response:
        perm = self.store.update_permission(user, fid, pid, _json_body(req))
        return self._render(
            "permissions.update",
            self.store.permission_resource(perm),
            req,
            _DEFAULT_MASKS["permission"],
        )

    def _perm_delete(self, req: _Request, user: str, fid: str, pid: str) -> _Response:
        self.store.delete_permission(user, fid, pid)
        return _Response(204)

    # -- changes -------------------------------------------------------------------------
    def _start_token(self, req: _Request, user: str) -> _Response:
        out = {
            "kind": "drive#startPageToken",
            "startPageToken": self.store.start_page_token(),
        }
        return self._render(
            "changes.getStartPageToken", out, req, "kind,startPageToken"
        )

    def _change_resource(
        self, entry: ChangeEntry, rec: FileRecord | None, user: str
    ) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": "drive#change",
            "type": "file",
            "changeType": "file",
            "time": rfc3339(entry.time),
            "removed": entry.removed,
            "fileId": entry.file_id,
        }
        if rec is not None:
            out["file"] = self.store.file_resource(rec, user)
        return out

    def _changes_list(self, req: _Request, user: str) -> _Response:
        token = req.params.get("pageToken")
        if not token:
            raise DriveApiError(
                400, "required", "Required parameter: pageToken", location="pageToken"
            )
        changes, next_token, new_start = self.store.list_changes(
            user,
            token,
            page_size=_page_size(req.params),
            include_removed=_bool_param(req.params, "includeRemoved", True),
            restrict_to_my_drive=_bool_param(req.params, "restrictToMyDrive", False),
        )
        out: dict[str, Any] = {
            "kind": "drive#changeList",
            "changes": [self._change_resource(e, r, user) for e, r in changes],
        }
        if next_token:
            out["nextPageToken"] = next_token
        if new_start:
            out["newStartPageToken"] = new_start
        return self._render("changes.list", out, req, _DEFAULT_MASKS["changes.list"])

    # -- batch, discovery, token ------------------------------------------------------------
    def _batch(self, req: _Request, user: str) -> _Response:
        parts = split_multipart(req.body, req.headers.get("content-type", ""))
        if len(parts) > _MAX_BATCH:
            raise DriveApiError(
                400,
                "batchSizeTooLarge",
                f"A batch may hold at most {_MAX_BATCH} calls.",
            )
        boundary = f"batch_{secrets.token_hex(12)}"
        out: list[bytes] = []
        for part_headers, payload in parts:
            content_id = part_headers.get("content-id", "")
            inner = self._parse_inner(payload, req.host)
            # The lock is released between parts, so other clients interleave as on Drive.
            resp = self.handle(inner, outer_user=user)
            head = [f"HTTP/1.1 {resp.status} {_reason(resp.status)}"]
            headers = {
                "Content-Type": "application/json; charset=UTF-8",
                **resp.headers,
            }
            head += [f"{k}: {v}" for k, v in headers.items()]
            head.append(f"Content-Length: {len(resp.body)}")
            response_id = (
                "<response-" + content_id[1:]
                if content_id.startswith("<")
                else content_id
            )
            out.append(
                f"--{boundary}\r\nContent-Type: application/http\r\n"
                f"Content-ID: {response_id}\r\n\r\n".encode()
                + "\r\n".join(head).encode()
                + b"\r\n\r\n"
                + resp.body
                + b"\r\n"
            )
        out.append(f"--{boundary}--\r\n".encode())
        return _Response(
            200,
            b"".join(out),
            {"Content-Type": f"multipart/mixed; boundary={boundary}"},
        )

    @staticmethod
    def _parse_inner(payload: bytes, host: str) -> _Request:
        line, _, rest = payload.partition(b"\n")
        try:
            method, target, _ = line.decode("latin-1").strip().split(" ", 2)
        except ValueError as exc:
            raise DriveApiError(400, "badRequest", "Malformed batch part.") from exc
        headers, body = split_headers(rest)
        if "content-length" in headers:
            body = body[: int(headers["content-length"])]
        url = urlsplit(target)
        return _Request(
            method.upper(), url.path, _query(url.query), headers, body, host
        )

    def _discovery(self, req: _Request, user: str) -> _Response:
        return _json_response(200, rerooted_discovery(f"http://{req.host}/"))

    def _token(self, req: _Request, user: str) -> _Response:
        """OAuth token endpoint: refresh tokens and (unverified) service-account JWTs.

        ``refresh:<email>`` refreshes to ``fake:<email>``; a JWT-bearer assertion
        yields ``fake:<sub>`` (domain-wide delegation) or ``fake:<iss>``.
        """
        form = _query(req.body.decode("latin-1"))
        grant = form.get("grant_type")
        email = ""
        if grant == "refresh_token" and form.get("refresh_token", "").startswith(
            "refresh:"
        ):
            email = form["refresh_token"][len("refresh:") :]
        elif grant == "urn:ietf:params:oauth:grant-type:jwt-bearer":
            email = _jwt_subject(form.get("assertion", ""))
        if "@" not in email:
            return _json_response(
                400, {"error": "invalid_grant", "error_description": "Bad Request"}
            )
        email = email.lower()
        return _json_response(
            200,
            {
                "access_token": f"fake:{email}",
                "expires_in": 3599,
                "token_type": "Bearer",
                "scope": "https://www.googleapis.com/auth/drive",
            },
        )


def _jwt_subject(assertion: str) -> str:
    """Return ``sub`` (else ``iss``) of a JWT without checking its signature."""
    try:
        payload = assertion.split(".")[1]
        claims = json.loads(
            base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        )
    except (IndexError, ValueError):
        return ""
    return str(claims.get("sub") or claims.get("iss") or "")


def _ids(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def _query(text: str) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(text, keep_blank_values=True).items()}


def _reason(status: int) -> str:
    return BaseHTTPRequestHandler.responses.get(status, ("Unknown",))[0]


# -- HTTP plumbing -----------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    """Keep-alive HTTP/1.1 handler; every response carries Content-Length."""

    protocol_version = "HTTP/1.1"
    # Without this, Nagle plus delayed ACK adds ~40 ms to every keep-alive request.
    disable_nagle_algorithm = True
    server_version = "FakeDrive/1.0"
    sys_version = ""
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, False)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean; the request log is on the server object

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _serve(self) -> None:
        body = self._read_body()
        url = urlsplit(self.path)
        params = _query(url.query)
        headers = {k.lower(): v for k, v in self.headers.items()}
        method = self.command.upper()
        override = headers.get("x-http-method-override")
        if method == "POST" and override:
            # googleapiclient turns GETs with URIs over 2 kB into form POSTs.
            method = override.upper()
            if headers.get("content-type", "").startswith(
                "application/x-www-form-urlencoded"
            ):
                params.update(_query(body.decode("latin-1")))
                body = b""
        host = headers.get("host") or "{}:{}".format(*self.server.server_address[:2])
        req = _Request(method, url.path, params, headers, body, host)
        resp = self.server.app.handle(req)
        if resp.drop:
            self._drop(resp.drop)
            return
        self.send_response(resp.status)
        for key, value in resp.headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(resp.body)))
        self.end_headers()
        if resp.body:
            self.wfile.write(resp.body)

    def _drop(self, how: str) -> None:
        self.close_connection = True
        if how == "reset":
            # SO_LINGER 0 turns close() into a RST: the client sees ECONNRESET.
            self.connection.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
            self.connection.close()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    # Keep-alive handler threads block on reads; stop() closes their sockets instead.
    block_on_close = False
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], app: _DriveApp) -> None:
        self.app = app
        self._conns: set[socket.socket] = set()
        self.opened = 0
        self._conns_lock = threading.Lock()
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up mid-response is routine in fault tests; stay quiet.
        import sys

        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)

    def track(self, conn: socket.socket, alive: bool) -> None:
        with self._conns_lock:
            if alive:
                self._conns.add(conn)
                self.opened += 1
            else:
                self._conns.discard(conn)

    def close_connections(self) -> None:
        with self._conns_lock:
            conns = list(self._conns)
            self._conns.clear()
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


# -- public server -------------------------------------------------------------------------


class FakeDriveServer:
    """A Drive v3-compatible server on loopback, driven by the real Google client.

    Parameters
    ----------
    host, port:
        Where to listen; port 0 picks a free port.
    name_index_delay:
        Seconds during which a new or renamed file is missing from queries that
        filter on ``name`` without a ``parents`` term (Drive's search index lags;
        ``files.get`` and parent queries see the file at once).
    name_lag_with_parents:
        If true, the lag also hides the file from queries that combine a
        ``name`` term with a ``parents`` term (only ``files.get``, the changes
        feed and name-free listings see it at once): the stricter model.
    clock:
        Monotonic clock for the name-index delay (tests may pass a fake one).

    Attributes
    ----------
    store:
        The :class:`~syft_flwr.testing._drive_store.DriveStore` behind the server,
        for white-box assertions (hold ``store.lock`` while reading it).

    Examples
    --------
    >>> with FakeDriveServer() as drive:  # doctest: +SKIP
    ...     svc = drive.service("alice@example.com")
    ...     svc.about().get(fields="user(emailAddress)").execute()
    {'user': {'emailAddress': 'alice@example.com'}}
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        name_index_delay: float = 0.0,
        name_lag_with_parents: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._host = host
        self._port = port
        self.store = DriveStore(
            name_index_delay=name_index_delay,
            name_lag_with_parents=name_lag_with_parents,
            clock=clock,
        )
        self._app = _DriveApp(self)
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._faults: collections.deque[_Fault] = collections.deque()
        self._stats_lock = threading.Lock()
        self._counters: collections.Counter[str] = collections.Counter()
        self._log: list[tuple[str, str | None, int]] = []
        self._discovery_text: str | None = None

    # -- lifecycle --------------------------------------------------------------------
    def start(self) -> FakeDriveServer:
        """Start serving on a background thread; returns ``self``."""
        if self._httpd is not None:
            return self
        self._httpd = _HTTPServer((self._host, self._port), self._app)
        self._port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fake-drive-{self._port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close every open connection; idempotent."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.close_connections()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeDriveServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Root URL, e.g. ``http://127.0.0.1:PORT/``."""
        return f"http://{self._host}:{self._port}/"

    @property
    def token_uri(self) -> str:
        """OAuth token endpoint: refresh token ``refresh:<email>`` yields ``fake:<email>``."""
        return self.url + "token"

    @property
    def name_index_delay(self) -> float:
        return self.store.name_index_delay

    @name_index_delay.setter
    def name_index_delay(self, value: float) -> None:
        self.store.name_index_delay = value

    # -- clients -----------------------------------------------------------------------
    def discovery_document(self) -> dict[str, Any]:
        """Return the Drive v3 discovery document re-rooted at this server."""
        return json.loads(self._discovery_json())

    def _discovery_json(self) -> str:
        if self._discovery_text is None:
            self._discovery_text = json.dumps(rerooted_discovery(self.url))
        return self._discovery_text

    def service(self, email: str) -> Any:
        """Return a new googleapiclient Drive ``Resource`` acting as ``email``.

        Each call builds a new ``httplib2.Http`` (which is not thread-safe), wrapped
        in ``AuthorizedHttp`` with ``build_http()`` so 308 is not taken as a redirect.
        """
        from google.oauth2.credentials import Credentials
        from google_auth_httplib2 import AuthorizedHttp
        from googleapiclient.discovery import build_from_document
        from googleapiclient.http import build_http

        creds = Credentials(token=f"fake:{email.strip().lower()}")
        http = AuthorizedHttp(creds, http=build_http())
        return build_from_document(self._discovery_json(), http=http)

    def authorized_user_info(self, email: str) -> dict[str, Any]:
        """Return an OAuth *authorized user* JSON for ``email`` that refreshes here."""
        return {
            "token": f"fake:{email.strip().lower()}",
            "refresh_token": f"refresh:{email.strip().lower()}",
            "token_uri": self.token_uri,
            "client_id": "fake-client-id.apps.googleusercontent.com",
            "client_secret": "fake-client-secret",
            "scopes": ["https://www.googleapis.com/auth/drive"],
        }

    # -- fault injection ------------------------------------------------------------------
    def inject_faults(
        self,
        faults: Iterable[tuple[int, str | None]],
        *,
        methods: Iterable[str] | None = None,
    ) -> None:
        """Queue faults answered to the next matching requests, one each, in order.

        Parameters
        ----------
        faults:
            ``(status, reason)`` pairs, e.g. ``(429, None)``, ``(500, None)``,
            ``(403, "rateLimitExceeded")``. ``(0, "drop")`` closes the connection
            without a response; ``(0, "reset")`` resets it; ``(0, "lost")`` serves
            the request (it takes effect) and then closes the connection without
            the response, as when a response is lost on the way back.
        methods:
            Only requests with these method names (``"files.list"``,
            ``"upload.put"``, ...) take the faults; default: any request.
        """
        only = frozenset(methods) if methods is not None else None
        with self._stats_lock:
            self._faults.extend(_Fault(int(s), r, only) for s, r in faults)

    def fault_storm(
        self,
        status: int,
        count: int,
        *,
        reason: str | None = None,
        methods: Iterable[str] | None = None,
    ) -> None:
        """Queue ``count`` identical faults (see :meth:`inject_faults`)."""
        self.inject_faults([(status, reason)] * count, methods=methods)

    def clear_faults(self) -> None:
        """Drop every queued fault."""
        with self._stats_lock:
            self._faults.clear()

    @property
    def pending_faults(self) -> int:
        """Number of queued faults not yet delivered."""
        with self._stats_lock:
            return len(self._faults)

    def _take_fault(self, name: str) -> _Fault | None:
        with self._stats_lock:
            for i, fault in enumerate(self._faults):
                if fault.methods is None or name in fault.methods:
                    del self._faults[i]
                    return fault
        return None

    # -- introspection -------------------------------------------------------------------
    def _record(self, name: str, user: str | None, status: int) -> None:
        with self._stats_lock:
            self._counters[name] += 1
            self._log.append((name, user, status))

    @property
    def counters(self) -> dict[str, int]:
        """Requests served per method name, faulted ones included.

        Names are Drive method ids without ``drive.`` (``files.list``,
        ``files.create``, ``changes.list``, ``permissions.create``, ...). A resumable
        upload counts its start under ``files.create``/``files.update`` and each
        session ``PUT`` under ``upload.put``; downloads count as ``files.get``.
        ``batch`` counts outer batch requests, whose parts are counted too.
        """
        with self._stats_lock:
            return dict(self._counters)

    def count(self, name: str) -> int:
        """Return how many ``name`` requests were served (e.g. ``"changes.list"``)."""
        with self._stats_lock:
            return self._counters[name]

    @property
    def request_log(self) -> list[tuple[str, str | None, int]]:
        """``(method name, user, status)`` of every request, oldest first."""
        with self._stats_lock:
            return list(self._log)

    @property
    def connections_opened(self) -> int:
        """TCP connections accepted so far (keep-alive reuses one per client)."""
        httpd = self._httpd
        return httpd.opened if httpd is not None else 0

    def reset_counters(self) -> None:
        """Forget counters and the request log."""
        with self._stats_lock:
            self._counters.clear()
            self._log.clear()

    def requests_by(self, email: str) -> int:
        """Return how many requests ``email`` made (faulted ones excluded)."""
        who = email.strip().lower()
        with self._stats_lock:
            return sum(1 for _, user, _ in self._log if user == who)

    def grants_of(self, email: str) -> set[tuple[str, str]]:
        """Return ``(grantee email, role)`` of every permission on files ``email`` owns."""
        who = email.strip().lower()
        with self.store.lock:
            return {
                (p.email or p.type, p.role)
                for rec in self.store.files.values()
                if rec.owner == who
                for p in rec.permissions
            }

    def files_of(self, email: str) -> list[dict[str, Any]]:
        """Return ``{id, name, mimeType, parents, size, trashed}`` of files ``email`` owns."""
        with self.store.lock:
            return self.store.files_of(email.strip().lower())

    def __repr__(self) -> str:
        state = "running" if self._httpd is not None else "stopped"
        return f"FakeDriveServer({self.url!r}, {state})"
