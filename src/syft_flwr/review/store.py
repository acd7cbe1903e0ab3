"""The data owner's durable list of projects and decisions (private, never synced).

Layout of the store folder (``client.state_dir("_review")``)::

    projects.json                       {"version": 2, "records": [record + tag, ...]}
    packages/<hash>-<researcher>.tar.gz the package as received (signature checked)

A record is keyed by *(researcher, project hash)* (:mod:`syft_flwr.review.records`):
the same files submitted by two researchers are two records, each decided, told
and served on its own. Every record carries an HMAC tag under the data owner's
``StateKey(keys, "review")``; a record that fails it is never acted on (it is
reported, kept as it is for inspection, and never treated as approved).

Every write is atomic (temp file + rename + fsync), and the package is on disk
before the index names it, so an interruption never leaves an approval that
points at nothing. Approval is read from here at each start: it survives a
restart. Finding a record by hash prefix is
:func:`~syft_flwr.review.records.find_record`; rendering one for review is
:func:`~syft_flwr.review.show.show_text` (re-exported here).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from syft_flwr._email import fold_domain
from syft_flwr.crypto.keys import _atomic_write
from syft_flwr.crypto.state_mac import StateKey
from syft_flwr.errors import (
    ConfigError,
    EnvelopeError,
    KeyNotFound,
    ReviewError,
    StateIntegrityError,
)
from syft_flwr.review.package import Package
from syft_flwr.review.records import (
    APPROVED,
    PENDING,
    REJECTED,
    STORE_VERSION,
    Index,
    ProjectRecord,
    find_record,
    parse_index,
    record_slug,
    requests_of,
    resubmitted,
    tagged,
)
from syft_flwr.review.show import show_text as show_text  # its home before
from syft_flwr.review.unpack import read_package
from syft_flwr.wire import strict_json

if TYPE_CHECKING:
    from syft_flwr.client.protocol import SyftFlwrClient

__all__ = [
    "APPROVED",
    "PENDING",
    "REJECTED",
    "ProjectRecord",
    "ProjectStore",
    "project_store",
    "requests_of",
    "show_text",
]

logger = logging.getLogger("syft_flwr.review")
_THREAD_LOCK = threading.Lock()
_INDEX = "projects.json"
_MAX_INDEX_BYTES = 256 * 1024 * 1024
Records = dict[tuple[str, str], ProjectRecord]


class ProjectStore:
    """Projects submitted to this data owner, with their review status.

    Parameters
    ----------
    directory : Path
        A private folder (created 0700), e.g. ``client.state_dir("_review")``.
    key : StateKey
        The data owner's ``StateKey(keys, "review")``: tags every record written,
        checks every record read.
    clock : callable, optional
        Current POSIX time.
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        key: StateKey,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = Path(directory)
        self.key = key
        self.clock = clock
        #: Records that failed their integrity check: ``(hash or "", raw, why)``.
        self.damaged: list[tuple[str, Any, str]] = []
        self._warned: set[str] = set()

    # -- storage ------------------------------------------------------------------
    def _parse(self) -> Index:
        """The index on disk, every record checked (failures logged once each)."""
        path = self.directory / _INDEX
        try:
            doc = strict_json.loads(path.read_bytes(), max_bytes=_MAX_INDEX_BYTES)
        except FileNotFoundError:
            return Index()
        except EnvelopeError as exc:
            raise StateIntegrityError(
                f"the review store {path} is damaged ({exc}); no project in it is "
                "treated as approved"
            ) from exc
        index = parse_index(doc, self.key, str(path))
        self.damaged = index.damaged
        for _, _, why in index.damaged:
            if why not in self._warned:  # the store is read at every request
                self._warned.add(why)
                logger.warning("ignored a review record: %s", why)
        return index

    def _load(self) -> Records:
        index = self._parse()
        if index.legacy:
            with self._writing():  # upgraded once, durably, with the note
                index = self._parse()
                if index.legacy:
                    logger.warning(
                        "the review store was written by an older syft_flwr without "
                        "integrity checks: its %d project(s) need your review again "
                        "(syft_flwr projects)",
                        len(index.records),
                    )
                    self._save(index)
        return index.records

    def _save(self, index: Index) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        entries = [tagged(r, self.key) for r in index.records.values()]
        # Damaged records stay as they were (evidence), never re-tagged.
        entries += [raw for _, raw, _ in index.damaged]
        data = _dumps({"version": STORE_VERSION, "records": entries})
        _atomic_write(self.directory / _INDEX, data, 0o600, force_mode=True)

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

    def _package_path(self, project_hash: str, researcher: str) -> Path:
        name = f"{project_hash}-{record_slug(researcher)}.tar.gz"
        return self.directory / "packages" / name

    # -- queries ------------------------------------------------------------------
    def records(self) -> list[ProjectRecord]:
        """Every project that passed its integrity check, newest first."""
        return sorted(self._load().values(), key=lambda r: -r.received)

    def __iter__(self) -> Iterator[ProjectRecord]:
        return iter(self.records())

    def get(self, ref: str, researcher: str | None = None) -> ProjectRecord:
        """The project whose hash starts with ``ref`` (at least 6 hex digits).

        Parameters
        ----------
        ref : str
            A hash prefix.
        researcher : str, optional
            Whose submission, when several researchers submitted that project.

        Raises
        ------
        ConfigError
            No project, or several, match.
        StateIntegrityError
            Only a record that failed its integrity check matches.
        """
        return find_record(self._load().values(), self.damaged, ref, researcher)

    def package(self, rec: ProjectRecord) -> Package:
        """Read back the package of ``rec`` (its shape and signer checked again).

        Raises
        ------
        StateIntegrityError
            The stored package is not the files, or not the researcher, of ``rec``.
        """
        path = self._package_path(rec.project_hash, rec.researcher)
        if not path.exists():  # stored by the first store format
            path = self.directory / "packages" / f"{rec.project_hash}.tar.gz"
        pkg = read_package(path.read_bytes())
        if (pkg.project_hash, pkg.manifest.researcher) != (
            rec.project_hash,
            rec.researcher,
        ):
            raise StateIntegrityError(
                f"the stored package of project {rec.short} from {rec.researcher} "
                "is not the one that was submitted; it was not used"
            )
        return pkg

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

    def is_approved(self, project_hash: str, researcher: str) -> bool:
        """Whether ``researcher``'s own record of ``project_hash`` is approved."""
        who = fold_domain(researcher)
        return any(
            r.status == APPROVED and fold_domain(r.researcher) == who
            for r in self._load().values()
            if r.project_hash == project_hash
        )

    def approved_researchers(self, project_hash: str) -> list[str]:
        """Every researcher whose submission of ``project_hash`` is approved."""
        return sorted(
            r.researcher
            for r in self._load().values()
            if r.project_hash == project_hash and r.status == APPROVED
        )

    def pending_count(self, researcher: str) -> int:
        """How many of ``researcher``'s projects wait for a decision."""
        who = fold_domain(researcher)
        return sum(
            1
            for r in self._load().values()
            if fold_domain(r.researcher) == who and r.status == PENDING
        )

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
        """Record a verified package of ``researcher`` (kept if already known).

        Only that researcher's own record of the same files is reused: another
        researcher's submission of identical files is a record of its own.
        """
        with self._writing():
            index = self._parse()
            known = index.records.get((researcher, package.project_hash))
            if known is not None:
                # A resubmission: answer its newer request, keep the decision.
                rec = resubmitted(known, request_key, expires)
            else:
                path = self._package_path(package.project_hash, researcher)
                path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                _atomic_write(path, data, 0o600, force_mode=True)  # before the index
                rec = self._new_record(package, researcher, fingerprint)
                # where the decision goes: the request this package came in
                rec = replace(rec, request_key=request_key, expires=expires)
            index.records[rec.key] = rec
            self._save(index)
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

    def decide(
        self, project_hash: str, researcher: str, status: str, reason: str = ""
    ) -> ProjectRecord:
        """Set ``status`` (approved or rejected) of ``researcher``'s record durably."""
        if status not in (APPROVED, REJECTED):
            raise ValueError(f"unknown decision {status!r}")
        with self._writing():
            index = self._parse()
            known = index.records.get((researcher, project_hash))
            if known is None:
                raise ReviewError(f"unknown project {project_hash} from {researcher}")
            rec = replace(
                known,
                status=status,
                reason=reason,
                decided=self.clock(),
                note="",
                other_requests=[],  # the caller answers them (see requests_of)
            )
            index.records[rec.key] = rec
            self._save(index)
        return rec

    def remove_work(self, path: Path) -> None:
        """Delete a working folder this store created (used before re-unpacking)."""
        import shutil

        if self.directory.resolve() in path.resolve().parents:
            with contextlib.suppress(FileNotFoundError):
                shutil.rmtree(path)


def _dumps(doc: Any) -> bytes:
    """The store's JSON bytes (sorted keys, so a rewrite changes only what changed)."""
    import json

    return json.dumps(doc, indent=2, sort_keys=True).encode()


def project_store(client: SyftFlwrClient) -> ProjectStore:
    """The data owner's project store, in ``client.state_dir("_review")``.

    Its records are authenticated with a key derived from the data owner's
    identity key (created and published first if this identity has none yet).

    Raises
    ------
    ConfigError
        The client has no private state folder (give a ``MemoryClient`` one).
    """
    from syft_flwr.crypto.policy import load_keys, load_or_create_keys

    folder = client.state_dir("_review")
    if folder is None:
        raise ConfigError(f"{client!r} has no state folder to keep reviews in")
    try:
        keys = load_keys(client)
    except KeyNotFound:
        keys = load_or_create_keys(client, client.make_transport())
    return ProjectStore(folder, key=StateKey(keys, "review"))
