"""The data owner's durable list of projects and decisions (private, never synced).

Layout of the store folder (``client.state_dir("_review")``)::

    projects.json              index: project hash -> record (status, researcher, ...)
    packages/<hash>.tar.gz     the package as received (signature checked)

Every write is atomic (temp file + rename + fsync), and the package is on disk
before the index names it, so an interruption never leaves an approval that
points at nothing. Approval is read from here at each start: it survives a
restart.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from syft_flwr.crypto.keys import _atomic_write
from syft_flwr.errors import ConfigError, ReviewError
from syft_flwr.review.package import Package, printable
from syft_flwr.review.unpack import read_package

if TYPE_CHECKING:
    from syft_flwr.client.protocol import SyftFlwrClient

__all__ = [
    "APPROVED",
    "PENDING",
    "REJECTED",
    "ProjectRecord",
    "ProjectStore",
    "project_store",
    "show_text",
]

PENDING, APPROVED, REJECTED = "pending", "approved", "rejected"
_THREAD_LOCK = threading.Lock()
_INDEX = "projects.json"


@dataclass(frozen=True)
class ProjectRecord:
    """One submitted project as the data owner sees it.

    Attributes
    ----------
    project_hash : str
        sha256 over the file list (what is approved).
    name : str
        The project's name as the researcher gave it.
    researcher : str
        The signer's email (the envelope's authenticated sender).
    fingerprint : str
        Fingerprint of the researcher's identity key that signed the manifest.
    files : list of list
        ``[path, sha256, size]`` per file.
    status : str
        ``"pending"``, ``"approved"`` or ``"rejected"``.
    reason : str
        Why it was rejected (empty otherwise).
    received, decided : float
        POSIX times (``decided`` 0 while pending).
    request_key : str
        Transport key of the submission request (the decision answers it).
    expires : str
        Expiry of that request (the decision's expiry too).
    """

    project_hash: str
    name: str
    researcher: str
    fingerprint: str
    files: list[list[Any]]
    status: str
    reason: str
    received: float
    decided: float
    request_key: str
    expires: str

    @property
    def short(self) -> str:
        return self.project_hash[:12]


class ProjectStore:
    """Projects submitted to this data owner, with their review status.

    Parameters
    ----------
    directory : Path
        A private folder (created 0700), e.g. ``client.state_dir("_review")``.
    clock : callable, optional
        Current POSIX time.
    """

    def __init__(
        self, directory: str | Path, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.directory = Path(directory)
        self.clock = clock

    # -- storage ------------------------------------------------------------------
    def _load(self) -> dict[str, ProjectRecord]:
        path = self.directory / _INDEX
        try:
            doc = json.loads(path.read_text("utf-8"))
        except FileNotFoundError:
            return {}
        except ValueError as exc:
            raise ConfigError(f"{path} is damaged: {exc}") from exc
        return {h: ProjectRecord(**r) for h, r in doc.items()}

    def _save(self, records: dict[str, ProjectRecord]) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        data = json.dumps(
            {h: asdict(r) for h, r in records.items()}, indent=2, sort_keys=True
        )
        _atomic_write(self.directory / _INDEX, data.encode(), 0o600, force_mode=True)

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """Serialize read-modify-write of the index across processes.

        ``projects``, ``approve`` and ``serve`` may run at once as separate
        commands; without the lock one could write back an index that lacks the
        other's change. POSIX only (``fcntl``); elsewhere a process-local lock.
        """
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        with _THREAD_LOCK:
            try:
                import fcntl
            except ImportError:  # Windows
                yield
                return
            fd = os.open(self.directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # releases the lock

    def _package_path(self, project_hash: str) -> Path:
        return self.directory / "packages" / f"{project_hash}.tar.gz"

    # -- queries ------------------------------------------------------------------
    def records(self) -> list[ProjectRecord]:
        """Every project, newest first."""
        return sorted(self._load().values(), key=lambda r: -r.received)

    def __iter__(self) -> Iterator[ProjectRecord]:
        return iter(self.records())

    def get(self, ref: str) -> ProjectRecord:
        """The project whose hash starts with ``ref`` (at least 6 hex digits).

        Raises
        ------
        ConfigError
            No project, or several, match ``ref``.
        """
        ref = ref.strip().lower()
        found = [
            r for h, r in self._load().items() if len(ref) >= 6 and h.startswith(ref)
        ]
        if len(found) != 1:
            what = "no project" if not found else f"{len(found)} projects"
            raise ConfigError(
                f"{what} matches {ref!r}; give at least 6 digits of a hash from "
                "`syft_flwr projects`"
            )
        return found[0]

    def package(self, project_hash: str) -> Package:
        """Read back the stored package (its shape checked again)."""
        return read_package(self._package_path(project_hash).read_bytes())

    def previous_approved(self, record: ProjectRecord) -> ProjectRecord | None:
        """The latest other approved version of the same project and researcher."""
        older = [
            r
            for r in self._load().values()
            if r.status == APPROVED
            and r.project_hash != record.project_hash
            and r.researcher == record.researcher
            and r.name == record.name
        ]
        return max(older, key=lambda r: r.decided, default=None)

    def is_approved(self, project_hash: str) -> bool:
        rec = self._load().get(project_hash)
        return rec is not None and rec.status == APPROVED

    # -- changes ------------------------------------------------------------------
    def add(
        self,
        package: Package,
        *,
        researcher: str,
        fingerprint: str,
        request_key: str,
        expires: str,
        data: bytes,
    ) -> ProjectRecord:
        """Record a verified package (kept as it is if already known)."""
        with self._writing():
            records = self._load()
            known = records.get(package.project_hash)
            if known is not None:
                # A resubmission: answer its newer request, keep the decision.
                rec = replace(known, request_key=request_key, expires=expires)
            else:
                path = self._package_path(package.project_hash)
                path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                _atomic_write(path, data, 0o600, force_mode=True)  # before the index
                rec = self._new_record(package, researcher, fingerprint)
                # where the decision goes: the request this package came in
                rec = replace(rec, request_key=request_key, expires=expires)
            records[rec.project_hash] = rec
            self._save(records)
        return rec

    def _new_record(
        self, package: Package, researcher: str, fingerprint: str
    ) -> ProjectRecord:
        return ProjectRecord(
            project_hash=package.project_hash,
            name=package.manifest.name,
            researcher=researcher,
            fingerprint=fingerprint,
            files=[[f.path, f.sha256, f.size] for f in package.manifest.files],
            status=PENDING,
            reason="",
            received=self.clock(),
            decided=0.0,
            request_key="",
            expires="",
        )

    def decide(self, project_hash: str, status: str, reason: str = "") -> ProjectRecord:
        """Set ``status`` (approved or rejected) durably; return the new record."""
        if status not in (APPROVED, REJECTED):
            raise ValueError(f"unknown decision {status!r}")
        with self._writing():
            records = self._load()
            if project_hash not in records:
                raise ReviewError(f"unknown project {project_hash}")
            rec = replace(
                records[project_hash],
                status=status,
                reason=reason,
                decided=self.clock(),
            )
            records[project_hash] = rec
            self._save(records)
        return rec

    def remove_work(self, path: Path) -> None:
        """Delete a working folder this store created (used before re-unpacking)."""
        import shutil

        if self.directory.resolve() in path.resolve().parents:
            with contextlib.suppress(FileNotFoundError):
                shutil.rmtree(path)


def project_store(client: SyftFlwrClient) -> ProjectStore:
    """The data owner's project store, in ``client.state_dir("_review")``.

    Raises
    ------
    ConfigError
        The client has no private state folder (give a ``MemoryClient`` one).
    """
    folder = client.state_dir("_review")
    if folder is None:
        raise ConfigError(f"{client!r} has no state folder to keep reviews in")
    return ProjectStore(folder)


def show_text(store: ProjectStore, ref: str) -> str:
    """The code of project ``ref`` and a diff against the version approved before.

    Parameters
    ----------
    store : ProjectStore
    ref : str
        A hash prefix.

    Returns
    -------
    str
    """
    rec = store.get(ref)
    pkg = store.package(rec.project_hash)
    p = printable  # everything below came from a researcher or a shared folder
    out = [
        f"project {p(rec.name)} {p(rec.project_hash)} [{p(rec.status)}]",
        f"from {p(rec.researcher)} (fingerprint {p(rec.fingerprint)})",
    ]
    if rec.reason:
        out.append(f"reason: {p(rec.reason)}")
    prev = store.previous_approved(rec)
    if prev is not None:
        old = store.package(prev.project_hash).files
        out.append(f"\n=== diff against approved {p(prev.short)} ===")
        for path in sorted(set(old) | set(pkg.files)):
            a = _lines(old.get(path, b""))
            b = _lines(pkg.files.get(path, b""))
            out.extend(
                p(line.rstrip("\n"), multiline=True)
                for line in difflib.unified_diff(a, b, f"a/{path}", f"b/{path}")
            )
    for path in sorted(pkg.files):
        out.append(f"\n=== {p(path)} ===")
        text = pkg.files[path].decode("utf-8", errors="replace")
        out.append(p(text, multiline=True).rstrip("\n"))
    return os.linesep.join(out) + os.linesep


def _lines(data: bytes) -> list[str]:
    return data.decode("utf-8", errors="replace").splitlines(keepends=True)
