"""In-memory model of Google Drive v3 for the fake Drive server.

Holds files, folders, permissions, the change log and resumable-upload sessions of
several users, and enforces the Drive rules that shape a peer-to-peer protocol:

* a file is visible to its owner and to users with a permission on it or on an
  ancestor folder (the owner of an ancestor folder gets *writer* on files other
  users put in it);
* only the owner may delete or trash; deleting a folder deletes the caller's
  descendants and orphans other users' files;
* a file has at most one parent (``403 cannotAddParent`` otherwise);
* ``name_index_delay`` hides just-created or renamed files from name-only
  searches, as Drive's full-text index lags behind ``files.get``;
* every mutation appends to a change log read back by ``changes.list``.

It knows nothing of HTTP; :mod:`syft_flwr.testing.drive_server` maps requests onto
it. All public methods must be called with :attr:`DriveStore.lock` held (the
server holds it for the whole request).

Size: over 400 lines because it is one data model under one lock: visibility,
ownership, the change log and uploads all read and write the same records, and
splitting them would spread the Drive rules the tests rely on over several files.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from syft_flwr.testing._drive_errors import DriveApiError as DriveApiError
from syft_flwr.testing._drive_errors import insufficient as insufficient
from syft_flwr.testing._drive_errors import invalid as invalid
from syft_flwr.testing._drive_errors import not_found as not_found
from syft_flwr.testing._drive_query import Node, QuerySubject
from syft_flwr.testing._drive_upload import CHUNK_GRANULARITY as CHUNK_GRANULARITY
from syft_flwr.testing._drive_upload import UploadSession as UploadSession
from syft_flwr.testing._drive_upload import append_chunk, parse_content_range

__all__ = [
    "CHUNK_GRANULARITY",
    "FOLDER_MIME",
    "ChangeEntry",
    "DriveApiError",
    "DriveStore",
    "FileRecord",
    "Permission",
    "UploadSession",
    "permission_id",
    "rfc3339",
]

FOLDER_MIME = "application/vnd.google-apps.folder"

READER, COMMENTER, WRITER, OWNER = 1, 2, 3, 5
_RANK = {"reader": READER, "commenter": COMMENTER, "writer": WRITER, "owner": OWNER}
_SHAREABLE_ROLES = ("reader", "commenter", "writer")

_ORDER_FIELDS = {
    "createdTime",
    "folder",
    "modifiedByMeTime",
    "modifiedTime",
    "name",
    "name_natural",
    "quotaBytesUsed",
    "recency",
    "sharedWithMeTime",
    "starred",
    "viewedByMeTime",
}


def permission_id(email: str) -> str:
    """Return the stable numeric permission id Drive gives a user."""
    digest = hashlib.sha256(email.encode()).hexdigest()
    return str(int(digest[:15], 16)).rjust(20, "0")


def rfc3339(ts: float) -> str:
    """Format an epoch time the way Drive does (``2026-01-02T03:04:05.678Z``)."""
    dt = datetime.fromtimestamp(ts, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


@dataclass
class Permission:
    """One grant on one file (the owner's grant is implicit in ``FileRecord.owner``)."""

    id: str
    type: str  # "user" or "anyone"
    role: str
    email: str | None
    granted_by: str


@dataclass
class FileRecord:
    """A file or folder."""

    id: str
    name: str
    mime_type: str
    owner: str
    parents: list[str]
    created: float
    modified: float
    version: int
    content: bytes | None = None
    md5: str | None = None
    permissions: list[Permission] = field(default_factory=list)
    trashed: bool = False
    starred: bool = False
    description: str | None = None
    app_properties: dict[str, str] = field(default_factory=dict)
    properties: dict[str, str] = field(default_factory=dict)
    #: ``time.monotonic()`` after which name searches see this file.
    indexed_at: float = 0.0
    is_root: bool = False

    @property
    def is_folder(self) -> bool:
        return self.mime_type == FOLDER_MIME

    @property
    def size(self) -> int:
        return len(self.content or b"")


@dataclass(frozen=True)
class ChangeEntry:
    """One row of the change log.

    A normal entry is visible to whoever can access the file *now*; a ``removed``
    entry only to the users in ``audience`` (those who lost access).
    """

    seq: int
    file_id: str
    time: float
    removed: bool
    audience: frozenset[str] = frozenset()


class _Subject(QuerySubject):
    """One file seen by one caller, for the query evaluator."""

    def __init__(self, store: DriveStore, rec: FileRecord, user: str) -> None:
        self.store = store
        self.rec = rec
        self.user = user

    def field(self, name: str) -> object:
        rec = self.rec
        if name == "name":
            return rec.name
        if name == "mimeType":
            return rec.mime_type
        if name == "fullText":
            return f"{rec.name} {rec.description or ''}"
        if name == "description":
            return rec.description
        if name == "trashed":
            return self.store.is_trashed(rec)
        if name == "starred":
            return rec.starred
        if name == "hidden":
            return False
        if name == "sharedWithMe":
            return self.store.shared_with(self.user, rec)
        if name in ("modifiedTime", "viewedByMeTime"):
            return rfc3339(rec.modified)
        if name == "createdTime":
            return rfc3339(rec.created)
        if name == "sharedWithMeTime":
            return (
                rfc3339(rec.created) if self.store.shared_with(self.user, rec) else None
            )
        raise KeyError(name)  # the parser only admits known fields

    def in_collection(self, value: str, collection: str) -> bool:
        if value == "me":
            value = self.user
        if collection == "parents":
            if value == "root":
                value = self.store.root_id(self.user)
            return value in self.rec.parents
        email = value.lower()
        if collection == "owners":
            return self.rec.owner == email
        need = WRITER if collection == "writers" else READER
        return self.store.role(email, self.rec, search=True) >= need


class DriveStore:
    """The state of a fake Drive shared by all users of one server.

    Parameters
    ----------
    name_index_delay:
        Seconds during which a new or renamed file is missing from searches that
        filter on ``name`` without a ``parents`` term.
    clock:
        Monotonic clock used for the name-index delay.
    """

    def __init__(
        self,
        *,
        name_index_delay: float = 0.0,
        name_lag_with_parents: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lock = threading.RLock()
        self.name_index_delay = name_index_delay
        self.name_lag_with_parents = name_lag_with_parents
        self.issued_ids: set[str] = set()
        self.clock = clock
        self.files: dict[str, FileRecord] = {}
        self.sessions: dict[str, UploadSession] = {}
        self.users: set[str] = set()
        self._roots: dict[str, str] = {}
        self._children: dict[str, set[str]] = {}
        self._changes: list[ChangeEntry] = []
        self._changes_by_file: dict[str, list[int]] = {}
        self._last_ts = 0.0
        self._version = 0

    # -- helpers -----------------------------------------------------------------
    def _now(self) -> float:
        # Strictly increasing millisecond timestamps, so every update changes
        # modifiedTime (clients use it as a version).
        ts = round(max(time.time(), self._last_ts + 0.001), 3)
        self._last_ts = ts
        return ts

    def _next_version(self) -> int:
        self._version += 1
        return self._version

    @staticmethod
    def _new_id() -> str:
        return "1" + secrets.token_urlsafe(24)[:32]

    def generate_ids(self, count: int) -> list[str]:
        """Return ``count`` new ids that ``files.create`` will accept once each."""
        ids = [self._new_id() for _ in range(count)]
        self.issued_ids.update(ids)
        return ids

    def _claim_id(self, meta: dict[str, Any]) -> str:
        """The id of a new file: the caller's (from ``generateIds``) or a fresh one."""
        wanted = meta.get("id")
        if wanted is None:
            return self._new_id()
        if wanted in self.files:
            # As on Drive: a repeated create with the same id conflicts instead of
            # making a second file.
            raise DriveApiError(
                409, "duplicate", "A file already exists with the provided ID."
            )
        if wanted not in self.issued_ids:
            raise invalid("The provided file ID is not usable.", location="id")
        return str(wanted)

    def register_user(self, user: str) -> None:
        """Note that ``user`` exists (they own a root folder and see changes)."""
        if user not in self.users:
            self.users.add(user)
            self.root_id(user)

    def root_id(self, user: str) -> str:
        """Return the id of ``user``'s My Drive root folder, creating it lazily."""
        rid = self._roots.get(user)
        if rid is None:
            now = self._now()
            rid = self._new_id()
            self.files[rid] = FileRecord(
                id=rid,
                name="My Drive",
                mime_type=FOLDER_MIME,
                owner=user,
                parents=[],
                created=now,
                modified=now,
                version=self._next_version(),
                is_root=True,
            )
            self._roots[user] = rid
        return rid

    def _link(self, rec: FileRecord) -> None:
        for pid in rec.parents:
            self._children.setdefault(pid, set()).add(rec.id)

    def _unlink(self, rec: FileRecord) -> None:
        for pid in rec.parents:
            self._children.get(pid, set()).discard(rec.id)

    def descendants(self, rec: FileRecord) -> list[FileRecord]:
        """Return every file below ``rec`` (breadth first, cycle safe)."""
        out: list[FileRecord] = []
        seen = {rec.id}
        todo = [rec.id]
        while todo:
            for cid in sorted(self._children.get(todo.pop(0), ())):
                if cid not in seen and cid in self.files:
                    seen.add(cid)
                    out.append(self.files[cid])
                    todo.append(cid)
        return out

    def role(self, user: str, rec: FileRecord, *, search: bool = False) -> int:
        """Return ``user``'s effective role rank on ``rec`` (0: no access).

        ``anyone`` grants open a file by id but do not make it searchable, as on
        Drive; ``search=True`` ignores them.
        """
        best = 0
        seen: set[str] = set()
        todo: list[tuple[FileRecord, bool]] = [(rec, True)]
        while todo:
            cur, direct = todo.pop()
            if cur.id in seen:
                continue
            seen.add(cur.id)
            if cur.owner == user:
                # Owning an ancestor folder gives writer access to others' files.
                best = max(best, OWNER if direct else WRITER)
            for perm in cur.permissions:
                if (perm.type == "user" and perm.email == user) or (
                    perm.type == "anyone" and not search
                ):
                    best = max(best, min(_RANK[perm.role], WRITER))
            for pid in cur.parents:
                parent = self.files.get(pid)
                if parent is not None:
                    todo.append((parent, False))
        return best

    def can_see(self, user: str, rec: FileRecord, *, search: bool = False) -> bool:
        return self.role(user, rec, search=search) > 0

    def shared_with(self, user: str, rec: FileRecord) -> bool:
        """Return whether ``rec`` was shared with ``user`` directly."""
        return rec.owner != user and any(
            p.type == "user" and p.email == user for p in rec.permissions
        )

    def is_trashed(self, rec: FileRecord) -> bool:
        seen: set[str] = set()
        todo = [rec]
        while todo:
            cur = todo.pop()
            if cur.trashed:
                return True
            seen.add(cur.id)
            todo.extend(
                self.files[p] for p in cur.parents if p in self.files and p not in seen
            )
        return False

    def get_visible(self, user: str, file_id: str) -> FileRecord:
        """Return the file if ``user`` may open it, else raise 404 (as Drive does)."""
        if file_id == "root":
            file_id = self.root_id(user)
        rec = self.files.get(file_id)
        if rec is None or not self.can_see(user, rec):
            raise not_found(file_id)
        return rec

    def _access(self, recs: Iterable[FileRecord]) -> dict[str, set[str]]:
        users = set(self.users)
        for rec in self.files.values():
            users.update(p.email for p in rec.permissions if p.email)
        return {r.id: {u for u in users if self.can_see(u, r)} for r in recs}

    def _log(
        self, file_id: str, *, removed: bool = False, audience: Iterable[str] = ()
    ) -> None:
        entry = ChangeEntry(
            seq=len(self._changes) + 1,
            file_id=file_id,
            time=self._now(),
            removed=removed,
            audience=frozenset(audience),
        )
        self._changes.append(entry)
        self._changes_by_file.setdefault(file_id, []).append(entry.seq)

    def _log_access_changes(
        self, before: dict[str, set[str]], survivors: Iterable[FileRecord]
    ) -> None:
        """Log a change per surviving file, and removals for users who lost access."""
        after = self._access(survivors)
        for fid, users in after.items():
            self._log(fid)
            lost = before.get(fid, set()) - users
            if lost:
                self._log(fid, removed=True, audience=lost)

    # -- files ---------------------------------------------------------------------
    def _check_parent(self, user: str, pid: str, location: str) -> FileRecord:
        if pid == "root":
            pid = self.root_id(user)
        parent = self.files.get(pid)
        if parent is None or not self.can_see(user, parent):
            raise DriveApiError(
                404, "notFound", f"File not found: {pid}.", location=location
            )
        if not parent.is_folder:
            raise invalid(f"The parent {pid} is not a folder.", location=location)
        if self.role(user, parent) < WRITER:
            raise insufficient(f"The user cannot add children to {pid}.")
        return parent

    def _apply_metadata(self, rec: FileRecord, meta: dict[str, Any]) -> None:
        if "name" in meta:
            name = meta["name"]
            if not isinstance(name, str):
                raise invalid("Invalid value for name.", location="name")
            if name != rec.name:
                rec.name = name
                rec.indexed_at = self.clock() + self.name_index_delay
        if "description" in meta:
            rec.description = meta["description"]
        if "starred" in meta:
            rec.starred = bool(meta["starred"])
        for key, target in (
            ("appProperties", rec.app_properties),
            ("properties", rec.properties),
        ):
            values = meta.get(key)
            if values is None:
                continue
            if not isinstance(values, dict):
                raise invalid(f"Invalid value for {key}.", location=key)
            for k, v in values.items():
                if v is None:
                    target.pop(k, None)
                else:
                    target[k] = str(v)

    def create(
        self,
        user: str,
        meta: dict[str, Any],
        content: bytes | None = None,
        media_mime: str | None = None,
    ) -> FileRecord:
        """Create a file (``content`` given) or a metadata-only file/folder."""
        self.register_user(user)
        parents = meta.get("parents") or ["root"]
        if not isinstance(parents, list) or not all(
            isinstance(p, str) for p in parents
        ):
            raise invalid("Invalid value for parents.", location="parents")
        if len(parents) > 1:
            raise DriveApiError(
                403,
                "cannotAddParent",
                "Increasing the number of parents is not allowed.",
            )
        parent = self._check_parent(user, parents[0], "parents")
        mime = meta.get("mimeType") or media_mime or "application/octet-stream"
        if mime == FOLDER_MIME and content:
            raise invalid("A folder cannot have content.", location="mimeType")
        if mime != FOLDER_MIME and content is None:
            content = b""
        file_id = self._claim_id(meta)
        now = self._now()
        rec = FileRecord(
            id=file_id,
            name="Untitled",
            mime_type=mime,
            owner=user,
            parents=[parent.id],
            created=now,
            modified=now,
            version=self._next_version(),
            content=content,
            md5=hashlib.md5(content).hexdigest() if content is not None else None,
            indexed_at=self.clock() + self.name_index_delay,
        )
        self._apply_metadata(rec, {"name": "Untitled", **meta})
        rec.indexed_at = self.clock() + self.name_index_delay
        if "trashed" in meta:
            rec.trashed = bool(meta["trashed"])
        self.files[rec.id] = rec
        self._link(rec)
        self._log(rec.id)
        return rec

    def update(
        self,
        user: str,
        file_id: str,
        meta: dict[str, Any],
        *,
        add_parents: list[str] | None = None,
        remove_parents: list[str] | None = None,
        content: bytes | None = None,
        media_mime: str | None = None,
    ) -> FileRecord:
        """Apply ``files.update``: metadata, moves and/or new content."""
        rec = self._updatable(user, file_id, meta)
        moving = bool(add_parents or remove_parents) or "trashed" in meta
        affected = [rec, *self.descendants(rec)] if moving else [rec]
        before = self._access(affected) if moving else {}
        new_parents = self._new_parents(user, rec, add_parents, remove_parents)
        self._apply_metadata(rec, meta)
        if "mimeType" in meta and not rec.is_folder and meta["mimeType"] != FOLDER_MIME:
            rec.mime_type = meta["mimeType"]
        elif media_mime and not rec.is_folder and "mimeType" not in meta:
            rec.mime_type = media_mime
        if "trashed" in meta:
            rec.trashed = bool(meta["trashed"])
        if new_parents != rec.parents:
            self._unlink(rec)
            rec.parents = new_parents
            self._link(rec)
        if content is not None:
            if rec.is_folder:
                raise invalid("A folder cannot have content.")
            rec.content = content
            rec.md5 = hashlib.md5(content).hexdigest()
        rec.modified = self._now()
        rec.version = self._next_version()
        if moving:
            self._log_access_changes(before, affected)
        else:
            self._log(rec.id)
        return rec

    def _updatable(self, user: str, file_id: str, meta: dict[str, Any]) -> FileRecord:
        """The file ``user`` may apply ``meta`` to (as Drive refuses, otherwise)."""
        rec = self.get_visible(user, file_id)
        if rec.is_root:
            raise insufficient("The root folder cannot be modified.")
        if self.role(user, rec) < WRITER:
            raise insufficient()
        if "parents" in meta:
            raise DriveApiError(
                403,
                "fieldNotWritable",
                "The parents field is not directly writable in update requests. "
                "Use the addParents and removeParents parameters instead.",
            )
        if "trashed" in meta and rec.owner != user:
            raise insufficient("Only the owner can trash a file.")
        return rec

    def _new_parents(
        self,
        user: str,
        rec: FileRecord,
        add_parents: list[str] | None,
        remove_parents: list[str] | None,
    ) -> list[str]:
        """``rec``'s parents after a move (at most one, as on Drive)."""
        new_parents = [p for p in rec.parents if p not in (remove_parents or [])]
        for pid in add_parents or []:
            parent = self._check_parent(user, pid, "addParents")
            if parent.id not in new_parents:
                new_parents.append(parent.id)
        if len(new_parents) > 1:
            raise DriveApiError(
                403,
                "cannotAddParent",
                "Increasing the number of parents is not allowed.",
            )
        return new_parents

    def delete(self, user: str, file_id: str) -> None:
        """Delete a file the caller owns; for a folder, also the caller's descendants."""
        rec = self.get_visible(user, file_id)
        if rec.is_root:
            raise insufficient("The root folder cannot be deleted.")
        if rec.owner != user:
            raise insufficient()
        subtree = [rec, *self.descendants(rec)]
        before = self._access(subtree)
        doomed = [rec] + [d for d in subtree[1:] if d.owner == user]
        doomed_ids = {d.id for d in doomed}
        for d in doomed:
            self._unlink(d)
            del self.files[d.id]
            self._children.pop(d.id, None)
        survivors = [s for s in subtree if s.id not in doomed_ids]
        for s in survivors:
            if any(p in doomed_ids for p in s.parents):
                s.parents = [p for p in s.parents if p not in doomed_ids]
        for d in doomed:
            self._log(d.id, removed=True, audience=before.get(d.id, ()))
        self._log_access_changes(before, survivors)
        self.sessions = {
            k: v for k, v in self.sessions.items() if v.file_id not in doomed_ids
        }

    def empty_trash(self, user: str) -> None:
        """Delete every trashed file the caller owns."""
        for rec in list(self.files.values()):
            if rec.id in self.files and rec.owner == user and rec.trashed:
                self.delete(user, rec.id)

    # -- listing -------------------------------------------------------------------
    @staticmethod
    def parse_order(order_by: str | None) -> list[tuple[str, bool]]:
        """Parse ``orderBy`` into ``[(field, descending)]``."""
        keys: list[tuple[str, bool]] = []
        for item in (order_by or "").split(","):
            words = item.split()
            if not words:
                continue
            if (
                len(words) > 2
                or words[0] not in _ORDER_FIELDS
                or (len(words) == 2 and words[1].lower() not in ("asc", "desc"))
            ):
                raise invalid(f"Invalid orderBy: {item.strip()!r}.", location="orderBy")
            keys.append((words[0], len(words) == 2 and words[1].lower() == "desc"))
        return keys

    def _sort_key(self, rec: FileRecord, order: list[tuple[str, bool]]) -> list[Any]:
        key: list[Any] = []
        for name, _ in order:
            if name in ("name", "name_natural"):
                key.append(rec.name.lower() + "\x00" + rec.name)
            elif name == "folder":
                key.append(0 if rec.is_folder else 1)
            elif name in ("createdTime", "sharedWithMeTime"):
                key.append(rec.created)
            elif name == "quotaBytesUsed":
                key.append(rec.size)
            elif name == "starred":
                key.append(int(rec.starred))
            else:  # modifiedTime, recency, modifiedByMeTime, viewedByMeTime
                key.append(rec.modified)
        return key

    def list_files(
        self,
        user: str,
        query: Node | None,
        *,
        order_by: str | None = None,
        page_size: int = 100,
        page_token: str | None = None,
    ) -> tuple[list[FileRecord], str | None]:
        """Return one page of the files ``user`` can find, and the next page token.

        Page tokens carry the sort key of the last file returned, so files created
        between two pages never shift the window (new files sort last by default).
        """
        self.register_user(user)
        order = self.parse_order(order_by) + [("createdTime", False)]
        directions = [desc for _, desc in order] + [False]
        now = self.clock()
        lagging = False
        if query is not None:
            names = query.fields()
            lagging = ("name" in names or "fullText" in names) and (
                self.name_lag_with_parents or "parents" not in names
            )
        rows: list[tuple[list[Any], FileRecord]] = []
        for rec in self.files.values():
            if rec.is_root or not self.can_see(user, rec, search=True):
                continue
            if lagging and rec.indexed_at > now:
                continue  # not in the name index yet
            if query is not None and not query.evaluate(_Subject(self, rec, user)):
                continue
            rows.append(([*self._sort_key(rec, order[:-1]), rec.created, rec.id], rec))

        def cmp(a: list[Any], b: list[Any]) -> int:
            for x, y, desc in zip(a, b, directions, strict=True):
                if x != y:
                    return (1 if x > y else -1) * (-1 if desc else 1)
            return 0

        rows.sort(key=functools.cmp_to_key(lambda r1, r2: cmp(r1[0], r2[0])))
        if page_token:
            try:
                after = json.loads(base64.urlsafe_b64decode(page_token.encode()))
                rows = [r for r in rows if cmp(r[0], after) > 0]
            except (ValueError, TypeError) as exc:
                raise invalid("Invalid pageToken.", location="pageToken") from exc
        page = rows[:page_size]
        token = None
        if len(rows) > page_size:
            token = base64.urlsafe_b64encode(json.dumps(page[-1][0]).encode()).decode()
        return [r for _, r in page], token

    # -- permissions ---------------------------------------------------------------
    def owner_permission(self, rec: FileRecord) -> Permission:
        return Permission(
            id=permission_id(rec.owner),
            type="user",
            role="owner",
            email=rec.owner,
            granted_by=rec.owner,
        )

    def permissions_of(self, user: str, file_id: str) -> list[Permission]:
        rec = self.get_visible(user, file_id)
        return [self.owner_permission(rec), *rec.permissions]

    def find_permission(self, user: str, file_id: str, perm_id: str) -> Permission:
        for perm in self.permissions_of(user, file_id):
            if perm.id == perm_id:
                return perm
        raise DriveApiError(
            404,
            "notFound",
            f"Permission not found: {perm_id}.",
            location="permissionId",
        )

    def create_permission(
        self, user: str, file_id: str, body: dict[str, Any]
    ) -> Permission:
        """Share ``file_id``: ``{"type": "user", "role": "writer", "emailAddress": ...}``."""
        rec = self.get_visible(user, file_id)
        if self.role(user, rec) < WRITER:
            raise insufficient("The user does not have permission to share this file.")
        ptype = body.get("type")
        role = body.get("role")
        if ptype not in ("user", "group", "anyone"):
            raise invalid("Invalid permission type.", location="permission.type")
        if role == "owner":
            raise DriveApiError(
                403,
                "consentRequiredForOwnershipTransfer",
                "Ownership transfer is not supported by this server.",
            )
        if role not in _SHAREABLE_ROLES:
            raise invalid("Invalid permission role.", location="permission.role")
        email: str | None = None
        if ptype == "anyone":
            pid = "anyoneWithLink"
        else:
            email = str(body.get("emailAddress") or "").strip().lower()
            if "@" not in email:
                raise DriveApiError(
                    400,
                    "invalidSharingRequest",
                    'Bad Request. User message: "You are trying to invite '
                    f'{email or "nobody"}. An email address is required."',
                )
            if email == rec.owner:
                return self.owner_permission(rec)
            pid = permission_id(email)
        affected = [rec, *self.descendants(rec)]
        before = self._access(affected)
        perm = next((p for p in rec.permissions if p.id == pid), None)
        if perm is None:
            perm = Permission(
                id=pid, type=ptype, role=role, email=email, granted_by=user
            )
            rec.permissions.append(perm)
        else:
            perm.role = role
        if email:
            self.register_user(email)
        self._log_access_changes(before, affected)
        return perm

    def update_permission(
        self, user: str, file_id: str, perm_id: str, body: dict[str, Any]
    ) -> Permission:
        rec = self.get_visible(user, file_id)
        perm = self.find_permission(user, file_id, perm_id)
        if self.role(user, rec) < WRITER:
            raise insufficient()
        role = body.get("role")
        if perm.role == "owner" or role not in _SHAREABLE_ROLES:
            raise invalid("Invalid permission role.", location="permission.role")
        perm.role = role
        self._log(rec.id)
        return perm

    def delete_permission(self, user: str, file_id: str, perm_id: str) -> None:
        rec = self.get_visible(user, file_id)
        perm = self.find_permission(user, file_id, perm_id)
        if perm.role == "owner":
            raise DriveApiError(
                403, "cannotDeletePermission", "The owner cannot be removed."
            )
        if self.role(user, rec) < WRITER and perm.email != user:
            raise insufficient()
        affected = [rec, *self.descendants(rec)]
        before = self._access(affected)
        rec.permissions = [p for p in rec.permissions if p.id != perm_id]
        self._log_access_changes(before, affected)

    # -- changes -------------------------------------------------------------------
    def start_page_token(self) -> str:
        return str(len(self._changes) + 1)

    def _change_visible(self, user: str, entry: ChangeEntry) -> bool:
        if entry.removed:
            return user in entry.audience
        rec = self.files.get(entry.file_id)
        return (
            rec is not None and not rec.is_root and self.can_see(user, rec, search=True)
        )

    def list_changes(
        self,
        user: str,
        page_token: str,
        *,
        page_size: int = 100,
        include_removed: bool = True,
        restrict_to_my_drive: bool = False,
    ) -> tuple[list[tuple[ChangeEntry, FileRecord | None]], str | None, str | None]:
        """Return ``(changes, nextPageToken, newStartPageToken)`` for ``user``.

        Several changes to one file collapse into its latest visible one, as on
        Drive.
        """
        self.register_user(user)
        try:
            start = int(page_token)
        except ValueError as exc:
            raise invalid("Invalid pageToken.", location="pageToken") from exc
        if start < 1:
            raise invalid("Invalid pageToken.", location="pageToken")
        root = self.root_id(user)
        out: list[tuple[ChangeEntry, FileRecord | None]] = []
        for entry in self._changes[start - 1 :]:
            if not self._change_visible(user, entry):
                continue
            later = self._changes_by_file[entry.file_id]
            if any(
                s > entry.seq and self._change_visible(user, self._changes[s - 1])
                for s in later
            ):
                continue  # superseded by a later change the user also sees
            if entry.removed and not include_removed:
                continue
            rec = None if entry.removed else self.files.get(entry.file_id)
            if restrict_to_my_drive and rec is not None and not self._under(rec, root):
                continue
            if len(out) == page_size:
                return out, str(entry.seq), None
            out.append((entry, rec))
        return out, None, self.start_page_token()

    def _under(self, rec: FileRecord, ancestor_id: str) -> bool:
        seen: set[str] = set()
        todo = list(rec.parents)
        while todo:
            pid = todo.pop()
            if pid == ancestor_id:
                return True
            if pid in seen or pid not in self.files:
                continue
            seen.add(pid)
            todo.extend(self.files[pid].parents)
        return False

    # -- resumable uploads -----------------------------------------------------------
    def start_upload(
        self,
        user: str,
        file_id: str | None,
        metadata: dict[str, Any],
        mime_type: str,
        total: int | None,
        params: dict[str, str],
    ) -> UploadSession:
        """Open a resumable session, checking permissions up front as Drive does."""
        self.register_user(user)
        if file_id is None:
            parents = metadata.get("parents") or ["root"]
            if isinstance(parents, list) and parents:
                self._check_parent(user, str(parents[0]), "parents")
        else:
            rec = self.get_visible(user, file_id)
            if self.role(user, rec) < WRITER:
                raise insufficient()
        session = UploadSession(
            id=secrets.token_urlsafe(16),
            user=user,
            file_id=file_id,
            metadata=metadata,
            mime_type=mime_type,
            total=total,
            params=params,
        )
        self.sessions[session.id] = session
        return session

    def upload_chunk(
        self, upload_id: str, content_range: str | None, body: bytes
    ) -> tuple[UploadSession, FileRecord | None]:
        """Apply one ``PUT`` of a resumable session.

        Returns the session and, once the upload is complete, the file.
        """
        session = self.sessions.get(upload_id)
        if session is None:
            raise DriveApiError(404, "notFound", "Upload session not found.")
        if session.result_id is not None:
            rec = self.files.get(session.result_id)
            if rec is None:
                raise not_found(session.result_id)
            return session, rec
        if content_range is None:
            # The whole body in one request (googleapiclient does this for empty files).
            session.data = bytearray(body)
            session.total = len(body)
            return session, self._finish_upload(session)
        first, last, total = parse_content_range(content_range, body)
        if total is not None:
            if session.total is not None and total != session.total:
                raise DriveApiError(
                    400, "badRequest", "Upload size changed mid-session."
                )
            session.total = total
        if first is None or last is None:  # status query: "bytes */N"
            if session.total is not None and len(session.data) == session.total:
                return session, self._finish_upload(session)
            return session, None
        if last - first + 1 != len(body):
            raise DriveApiError(
                400, "badRequest", "Content-Range does not match the body."
            )
        if append_chunk(session, first, body):
            return session, self._finish_upload(session)
        return session, None

    def _finish_upload(self, session: UploadSession) -> FileRecord:
        content = bytes(session.data)
        if session.file_id is None:
            rec = self.create(
                session.user, session.metadata, content, session.mime_type
            )
        else:
            split = _split_ids
            rec = self.update(
                session.user,
                session.file_id,
                session.metadata,
                add_parents=split(session.params.get("addParents")),
                remove_parents=split(session.params.get("removeParents")),
                content=content,
                media_mime=session.mime_type,
            )
        session.result_id = rec.id
        session.data = bytearray()  # the file now holds the bytes
        return rec

    # -- resources -------------------------------------------------------------------
    def user_resource(self, email: str, me: str) -> dict[str, Any]:
        return {
            "kind": "drive#user",
            "displayName": email.split("@")[0],
            "emailAddress": email,
            "me": email == me,
            "permissionId": permission_id(email),
        }

    def permission_resource(self, perm: Permission) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": "drive#permission",
            "id": perm.id,
            "type": perm.type,
            "role": perm.role,
            "allowFileDiscovery": False,
            "deleted": False,
            "pendingOwner": False,
        }
        if perm.email:
            out["emailAddress"] = perm.email
            out["displayName"] = perm.email.split("@")[0]
        return out

    def file_resource(self, rec: FileRecord, user: str) -> dict[str, Any]:
        """Render ``rec`` as a Drive ``File`` resource seen by ``user``."""
        role = self.role(user, rec)
        out: dict[str, Any] = {
            "kind": "drive#file",
            "id": rec.id,
            "name": rec.name,
            "mimeType": rec.mime_type,
            "parents": [
                p
                for p in rec.parents
                if p in self.files and self.can_see(user, self.files[p])
            ],
            "owners": [self.user_resource(rec.owner, user)],
            "ownedByMe": rec.owner == user,
            "shared": bool(rec.permissions),
            "createdTime": rfc3339(rec.created),
            "modifiedTime": rfc3339(rec.modified),
            "version": str(rec.version),
            "trashed": self.is_trashed(rec),
            "explicitlyTrashed": rec.trashed,
            "starred": rec.starred,
            "spaces": ["drive"],
            "webViewLink": f"https://drive.google.com/file/d/{rec.id}/view",
            "writersCanShare": True,
            "viewedByMe": True,
            "capabilities": _capabilities(rec, user, role),
        }
        if not rec.is_folder:
            out.update(
                size=str(rec.size),
                quotaBytesUsed=str(rec.size) if rec.owner == user else "0",
                md5Checksum=rec.md5,
                headRevisionId=str(rec.version),
            )
        else:
            out["quotaBytesUsed"] = "0"
        if rec.description is not None:
            out["description"] = rec.description
        if rec.app_properties:
            out["appProperties"] = dict(rec.app_properties)
        if rec.properties:
            out["properties"] = dict(rec.properties)
        out.update(self._sharing_fields(rec, user, role))
        return out

    def _sharing_fields(self, rec: FileRecord, user: str, role: int) -> dict[str, Any]:
        """Permissions (for writers) and who shared ``rec`` with ``user``."""
        out: dict[str, Any] = {}
        if role >= WRITER:
            perms = [self.owner_permission(rec), *rec.permissions]
            out["permissions"] = [self.permission_resource(p) for p in perms]
            out["permissionIds"] = [p.id for p in perms]
        direct = next(
            (p for p in rec.permissions if p.type == "user" and p.email == user), None
        )
        if direct is not None and rec.owner != user:
            out["sharingUser"] = self.user_resource(direct.granted_by, user)
            out["sharedWithMeTime"] = rfc3339(rec.created)
        return out

    def files_of(self, email: str) -> list[dict[str, Any]]:
        """Return a summary of every file ``email`` owns (roots excluded)."""
        return [
            {
                "id": r.id,
                "name": r.name,
                "mimeType": r.mime_type,
                "parents": list(r.parents),
                "size": r.size,
                "trashed": r.trashed,
            }
            for r in sorted(self.files.values(), key=lambda r: (r.created, r.id))
            if r.owner == email and not r.is_root
        ]


def _split_ids(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def _capabilities(rec: FileRecord, user: str, role: int) -> dict[str, bool]:
    """What ``user`` (with ``role`` on it) may do with ``rec``, as Drive reports it."""
    return {
        "canEdit": role >= WRITER,
        "canRename": role >= WRITER,
        "canShare": role >= WRITER,
        "canDelete": rec.owner == user,
        "canTrash": rec.owner == user,
        "canDownload": not rec.is_folder,
        "canAddChildren": rec.is_folder and role >= WRITER,
        "canListChildren": rec.is_folder,
        "canRemoveChildren": rec.is_folder and role >= WRITER,
    }
