"""One review record on disk: its fields, its integrity tag, and older formats.

A record is keyed by *(researcher, project hash)*: two researchers who submit the
same files get two records, each with its own decision, reason and reply path.
Every record in ``projects.json`` carries an HMAC tag under the data owner's
``StateKey(keys, "review")`` over all its fields, so a record that was edited,
copied from another data owner's store or written without a tag is never acted
on (:class:`~syft_flwr.errors.StateIntegrityError`).

Records of the first store format (keyed by hash alone, untagged) cannot be
trusted, so they are read as *pending* with a :data:`LEGACY_NOTE`: the data owner
reviews and approves them again.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from syft_flwr._email import fold_domain
from syft_flwr.crypto.state_mac import StateKey
from syft_flwr.errors import ConfigError, StateIntegrityError

__all__ = [
    "APPROVED",
    "LEGACY_NOTE",
    "PENDING",
    "REJECTED",
    "STORE_VERSION",
    "Index",
    "ProjectRecord",
    "find_record",
    "legacy_record",
    "parse_index",
    "parse_record",
    "record_slug",
    "requests_of",
    "resubmitted",
    "tagged",
]

PENDING, APPROVED, REJECTED = "pending", "approved", "rejected"
#: Version of the ``projects.json`` layout written now (the first one had none).
STORE_VERSION = 2
#: Shown on records read from the first, unauthenticated store format.
LEGACY_NOTE = (
    "recorded by an older syft_flwr without an integrity check; its earlier "
    "decision is not trusted: review it and approve or reject it again"
)
_HASH = re.compile(r"[0-9a-f]{64}")
#: Earlier requests of one pending record kept to answer (older ones are dropped).
_MAX_OTHERS = 20


@dataclass(frozen=True)
class ProjectRecord:
    """One project submitted by one researcher, as the data owner sees it.

    Attributes
    ----------
    project_hash : str
        sha256 over the file list (what is approved).
    name : str
        The project's name as the researcher gave it.
    researcher : str
        The signer's email (the envelope's authenticated sender): the only
        researcher this record's decision is for and approves.
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
    note : str
        A remark of the store itself (e.g. :data:`LEGACY_NOTE`); empty normally.
    other_requests : list of list
        ``[request_key, expires]`` of this researcher's earlier submissions of
        the same files while it was pending: the decision answers them too.
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
    note: str = ""
    other_requests: list[list[str]] = field(default_factory=list)

    @property
    def short(self) -> str:
        return self.project_hash[:12]

    @property
    def key(self) -> tuple[str, str]:
        """What a record is keyed by: ``(researcher, project_hash)``."""
        return (self.researcher, self.project_hash)


_FIELDS = {f.name for f in fields(ProjectRecord)}
_TEXT = ("project_hash", "name", "researcher", "fingerprint", "status", "reason")
_TEXT += ("request_key", "expires", "note")


def record_slug(researcher: str) -> str:
    """A file-name-safe id of a researcher (never the email itself in a path)."""
    return hashlib.sha256(researcher.encode("utf-8")).hexdigest()[:16]


def _canonical(rec: ProjectRecord) -> bytes:
    return json.dumps(asdict(rec), sort_keys=True, separators=(",", ":")).encode()


def tagged(rec: ProjectRecord, key: StateKey) -> dict[str, Any]:
    """``rec`` as a JSON object with its integrity tag."""
    tag = key.tag_hex(rec.researcher, rec.project_hash, _canonical(rec))
    return asdict(rec) | {"tag": tag}


def _build(doc: dict[str, Any], what: str) -> ProjectRecord:
    """A record from ``doc``'s fields, each of the right type, or an error."""
    given = {k: v for k, v in doc.items() if k in _FIELDS}
    try:
        rec = ProjectRecord(**given)
    except TypeError as exc:
        raise StateIntegrityError(f"{what} is not a review record: {exc}") from exc
    ok = (
        all(isinstance(getattr(rec, k), str) for k in _TEXT)
        and isinstance(rec.received, (int, float))
        and isinstance(rec.decided, (int, float))
        and isinstance(rec.files, list)
        and all(_is_file_entry(f) for f in rec.files)
        and isinstance(rec.other_requests, list)
        and all(
            isinstance(r, list) and len(r) == 2 and all(isinstance(x, str) for x in r)
            for r in rec.other_requests
        )
        and _HASH.fullmatch(rec.project_hash) is not None
        and rec.status in (PENDING, APPROVED, REJECTED)
    )
    if not ok:
        raise StateIntegrityError(f"{what} has a field of the wrong kind")
    return rec


def _is_file_entry(entry: Any) -> bool:
    """``[path, sha256, size]`` as the manifest lists it."""
    return (
        isinstance(entry, list)
        and len(entry) == 3
        and isinstance(entry[0], str)
        and isinstance(entry[1], str)
        and isinstance(entry[2], int)
        and not isinstance(entry[2], bool)
    )


def parse_record(doc: Any, key: StateKey, what: str) -> ProjectRecord:
    """Check ``doc``'s tag and return its record.

    Raises
    ------
    StateIntegrityError
        Not a record, or its tag does not authenticate it under ``key``.
    """
    if not isinstance(doc, dict) or not isinstance(doc.get("tag"), str):
        raise StateIntegrityError(
            f"{what} has no integrity tag; it was not written by this data owner"
        )
    rec = _build(doc, what)
    if set(doc) - {"tag"} != _FIELDS:
        raise StateIntegrityError(f"{what} has missing or extra fields")
    key.verify(doc["tag"], rec.researcher, rec.project_hash, _canonical(rec), what=what)
    return rec


def legacy_record(project_hash: str, doc: Any) -> ProjectRecord:
    """A record of the first store format, read as pending with :data:`LEGACY_NOTE`.

    Raises
    ------
    StateIntegrityError
        ``doc`` is not a record of that format.
    """
    what = f"old review record {str(project_hash)[:12]!r}"
    if not isinstance(doc, dict) or doc.get("project_hash") != project_hash:
        raise StateIntegrityError(f"{what} is not a review record")
    rec = _build(doc | {"note": "", "other_requests": []}, what)
    return replace(rec, status=PENDING, reason="", decided=0.0, note=LEGACY_NOTE)


def requests_of(rec: ProjectRecord) -> list[tuple[str, str]]:
    """Every open request a decision on ``rec`` answers: ``(key, expires)``, latest first."""
    return [(rec.request_key, rec.expires)] + [(k, e) for k, e in rec.other_requests]


def resubmitted(known: ProjectRecord, request_key: str, expires: str) -> ProjectRecord:
    """``known`` answering the newer ``request_key``; a pending one answers both."""
    if request_key in {known.request_key, *(k for k, _ in known.other_requests)}:
        return known
    others = list(known.other_requests)
    if known.status == PENDING and known.request_key:
        # Still waiting: the earlier request gets the decision too, or it would
        # stay unanswered and be read again at every `projects`.
        others = (others + [[known.request_key, known.expires]])[-_MAX_OTHERS:]
    return replace(
        known, request_key=request_key, expires=expires, other_requests=others
    )


@dataclass
class Index:
    """What ``projects.json`` holds, as read.

    Attributes
    ----------
    records : dict
        ``(researcher, project_hash) -> ProjectRecord``, every one checked.
    damaged : list of tuple
        ``(project hash or "", raw entry, why)`` of entries that failed: kept as
        they are when the index is written again (evidence), never acted on.
    legacy : bool
        The file is of the first, untagged format (records read as pending).
    """

    records: dict[tuple[str, str], ProjectRecord] = field(default_factory=dict)
    damaged: list[tuple[str, Any, str]] = field(default_factory=list)
    legacy: bool = False

    def set_aside(self, entry: Any, why: str) -> None:
        named = entry.get("project_hash") if isinstance(entry, dict) else None
        self.damaged.append((named if isinstance(named, str) else "", entry, why))


def parse_index(doc: Any, key: StateKey, where: str) -> Index:
    """Check every record of a parsed ``projects.json``.

    Raises
    ------
    StateIntegrityError
        The file as a whole is not a review store this version can read.
    """
    if not isinstance(doc, dict):
        raise StateIntegrityError(f"the review store {where} is not a store")
    if "version" not in doc:  # the first format: {hash: record}, no tags
        return _parse_legacy(doc)
    if doc.get("version") != STORE_VERSION or not isinstance(doc.get("records"), list):
        raise StateIntegrityError(
            f"the review store {where} has a layout this syft_flwr cannot read "
            f"(version {str(doc.get('version'))[:20]!r})"
        )
    index = Index()
    for i, entry in enumerate(doc["records"], 1):
        what = f"review record {i} in {where}"
        try:
            rec = parse_record(entry, key, what)
            if rec.key in index.records:
                raise StateIntegrityError(f"{what} is a second copy of a record")
        except StateIntegrityError as exc:
            index.set_aside(entry, str(exc))
            continue
        index.records[rec.key] = rec
    return index


def find_record(
    records: Iterable[ProjectRecord],
    damaged: Iterable[tuple[str, Any, str]],
    ref: str,
    researcher: str | None = None,
) -> ProjectRecord:
    """The record whose hash starts with ``ref`` (at least 6 hex digits).

    ``damaged`` are the records that failed their integrity check (hash, raw,
    why): a ``ref`` that matches only one of them says why it is not used.

    Raises
    ------
    ConfigError
        No record, or several, match.
    StateIntegrityError
        Only a record that failed its integrity check matches.
    """
    ref = ref.strip().lower()
    who = None if researcher is None else fold_domain(researcher)
    found = [
        r
        for r in records
        if len(ref) >= 6
        and r.project_hash.startswith(ref)
        and (who is None or fold_domain(r.researcher) == who)
    ]
    if len(found) == 1:
        return found[0]
    if not found:
        bad = [w for h, _, w in damaged if len(ref) >= 6 and h.startswith(ref)]
        if bad:
            raise StateIntegrityError(bad[0])
        raise ConfigError(
            f"no project matches {ref!r}"
            + (f" from {researcher}" if researcher else "")
            + "; give at least 6 digits of a hash from `syft_flwr projects`"
        )
    if len({r.project_hash for r in found}) == 1:
        who = ", ".join(sorted(r.researcher for r in found))
        raise ConfigError(
            f"project {found[0].short} was submitted by {len(found)} researchers "
            f"({who}); each is decided on its own: name one with --researcher"
        )
    raise ConfigError(
        f"{len(found)} projects match {ref!r}; give more digits of the hash"
    )


def _parse_legacy(doc: dict[str, Any]) -> Index:
    index = Index(legacy=True)
    for project_hash, entry in doc.items():
        try:
            rec = legacy_record(project_hash, entry)
        except StateIntegrityError as exc:
            index.set_aside(entry, str(exc))
            continue
        index.records[rec.key] = rec
    return index
