"""The head of a message: its fields, the bytes a seal binds, and the one strict reader.

Part of the envelope (``docs/envelope.md``; the encoder and the body codecs are
in :mod:`syft_flwr.wire.envelope`, which re-exports every name here). Every head
read from a shared folder goes through :func:`parse_head`: limits are checked
before and while parsing, unknown fields are refused, and the first fault found
is the one reported.

Size: just over 400 lines, because the one strict reader of every field of a head
stays in one module, next to the fields it checks.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple

from syft_flwr._email import fold_domain
from syft_flwr.errors import ChunkIntegrityError, EnvelopeError
from syft_flwr.wire import strict_json

__all__ = [
    "ENVELOPE_VERSION",
    "ChunkInfo",
    "Head",
    "ID_PATTERN",
    "Kind",
    "MAX_HEAD_BYTES",
    "SIGNED_HEAD_VERSION",
    "check_id",
    "chunk_name",
    "format_time",
    "head_name",
    "parse_head",
    "parse_time",
    "signed_head",
]

ENVELOPE_VERSION = 3
#: First version whose head fields are bound into the seal (:func:`signed_head`).
SIGNED_HEAD_VERSION = 3
Kind = Literal["request", "response"]


def format_time(ts: float) -> str:
    """Return the ISO-8601 UTC form syft-rpc uses (``2026-11-23T19:36:47.489702+00:00``)."""
    return datetime.fromtimestamp(ts, tz=UTC).isoformat()


def parse_time(value: str) -> float:
    """Parse an ISO-8601 timestamp (``Z`` accepted) into a POSIX timestamp."""
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return dt.timestamp()
    except (ValueError, AttributeError, OverflowError) as exc:
        raise EnvelopeError(f"invalid timestamp {str(value)[:80]!r}") from exc


def head_name(message_id: str, kind: Kind) -> str:
    """File name of the head: ``<id>.request`` or ``<id>.response``."""
    return f"{message_id}.{kind}"


def chunk_name(message_id: str, kind: Kind, index: int) -> str:
    """File name of chunk ``index``: ``<id>.<kind>.<nnnnnn>.chunk``.

    It does not end in ``.request``/``.response``, so request watchers and
    syft-rpc tools never mistake a chunk for a message.
    """
    return f"{message_id}.{kind}.{index:06d}.chunk"


@dataclass(frozen=True)
class ChunkInfo:
    size: int
    sha256: str


@dataclass(frozen=True)
class Head:
    """A parsed head file."""

    id: str
    kind: Kind
    sender: str
    url: str
    created: str
    expires: str
    headers: dict[str, str]
    size: int
    storage: Literal["inline", "chunks"]
    inline_body: bytes = b""
    chunks: tuple[ChunkInfo, ...] = ()
    encryption: dict[str, Any] | None = None
    status_code: int | None = None
    method: str | None = None
    version: int = ENVELOPE_VERSION
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def expires_at(self) -> float:
        return parse_time(self.expires)

    @property
    def created_at(self) -> float:
        return parse_time(self.created)

    @property
    def encrypted(self) -> bool:
        return self.encryption is not None

    @property
    def signed_fields(self) -> bytes:
        """:func:`signed_head` of this head; empty before version 3 (not sealed)."""
        if self.version < SIGNED_HEAD_VERSION:
            return b""
        return signed_head(self.raw)


#: Head fields a seal cannot cover, because they are its output: the stored body
#: and the chunk list (the signature covers their digests) and the encryption
#: header (its key and prekey id are signed separately; the signature is in it).
_UNSIGNED_TOP = frozenset({"body"})
_UNSIGNED_META = frozenset({"chunks", "encryption"})


def signed_head(doc: Mapping[str, Any]) -> bytes:
    """The canonical bytes of every head field a version-3 seal binds.

    That is the whole head except the stored body, the chunk list and the
    encryption header: status, creation time, expiry, ids, url, method,
    headers, version, kind, size and storage. Canonical JSON (sorted keys, no
    spaces, ASCII): the strict reader accepts only strings, integers, ``null``
    and objects of them there, which re-encode to the same bytes on every side,
    and two different heads never encode alike.

    Parameters
    ----------
    doc : Mapping
        The head as a JSON object (written, or as parsed by :func:`parse_head`).

    Returns
    -------
    bytes
    """
    top = {k: v for k, v in doc.items() if k not in _UNSIGNED_TOP}
    meta = top.get("syft_flwr")
    if isinstance(meta, Mapping):
        top["syft_flwr"] = {k: v for k, v in meta.items() if k not in _UNSIGNED_META}
    return json.dumps(
        top, sort_keys=True, separators=(",", ":"), ensure_ascii=True
    ).encode("ascii")


#: A message id (and so a file name stem): what syft-rpc and Flower produce (UUIDs),
#: never a path, never ``.``/``..``, never a newline.
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
#: A head is small: JSON, an inline body of at most ``inline_limit`` (64 KiB by
#: default) and one manifest line per chunk. Writers keep it under the chunk size.
MAX_HEAD_BYTES = 8 * 1024 * 1024
#: Bytes a stored part may exceed its plaintext by (an AEAD tag is 16).
MAX_PART_OVERHEAD = 64
_TOP_FIELDS = frozenset(
    {
        "id",
        "sender",
        "url",
        "method",
        "headers",
        "body",
        "created",
        "expires",
        "status_code",
        "syft_flwr",
    }
)
_META_FIELDS = frozenset({"v", "kind", "size", "storage", "chunks", "encryption"})
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_EMAIL = re.compile(r"^[^@\s/\\]{1,128}@[^@\s/\\]{1,253}$")
MAX_HEADERS = 64
MAX_TEXT = 2048  # characters in a url, a header value, a timestamp


def check_id(value: object, what: str = "message id") -> str:
    """Return ``value`` if it is a valid message id, else raise EnvelopeError."""
    if not isinstance(value, str) or not ID_PATTERN.match(value):
        raise EnvelopeError(f"invalid {what} {str(value)[:80]!r}")
    return value


def _text(doc: Mapping[str, Any], name: str, *, limit: int = MAX_TEXT) -> str:
    value = doc.get(name)
    if not isinstance(value, str):
        raise EnvelopeError(f"head field {name!r} must be a string")
    if len(value) > limit:
        raise EnvelopeError(f"head field {name!r} is longer than {limit} characters")
    return value


def _int_field(
    obj: Mapping[str, Any], name: str, lo: int, hi: int, default: int | None = None
) -> int:
    value = obj.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise EnvelopeError(f"field {name!r} must be an integer")
    if not lo <= value <= hi:
        raise EnvelopeError(f"field {name!r} = {value} is outside [{lo}, {hi}]")
    return value


def _check_chunks(
    raw: object, size: int, encrypted: bool, max_message_bytes: int
) -> tuple[ChunkInfo, ...]:
    if not isinstance(raw, list) or not raw:
        raise EnvelopeError("chunked body lists no chunks")
    chunks = []
    for c in raw:
        if not isinstance(c, dict) or set(c) != {"size", "sha256"}:
            raise EnvelopeError("a chunk entry must have exactly 'size' and 'sha256'")
        csize = _int_field(c, "size", 1, max_message_bytes + MAX_PART_OVERHEAD)
        digest = c["sha256"]
        if not isinstance(digest, str) or not _SHA256.match(digest):
            raise EnvelopeError("a chunk's sha256 is not 64 lower-case hex digits")
        chunks.append(ChunkInfo(csize, digest))
    # Sizes must agree: every chunk but the last the same size, and the stored
    # total equal to the body plus at most the codec's per-part overhead.
    first = chunks[0].size
    if any(c.size != first for c in chunks[:-1]) or chunks[-1].size > first:
        raise EnvelopeError("chunk sizes are not a split of one body")
    stored = sum(c.size for c in chunks)
    slack = len(chunks) * (MAX_PART_OVERHEAD if encrypted else 0)
    if not size <= stored <= size + slack:
        raise ChunkIntegrityError(
            f"{len(chunks)} chunks hold {stored} bytes for a {size}-byte body"
        )
    return tuple(chunks)


def parse_head(
    data: bytes,
    *,
    expected_kind: Kind | None = None,
    max_message_bytes: int = 2 * 1024**3,
) -> Head:
    """Parse a head file: the one strict reader of every head (v0, v1 and v2).

    Limits are checked before and while parsing: the head's size, its nesting
    depth, finite numbers only, known fields only, ids matching
    :data:`ID_PATTERN`, a body no larger than ``max_message_bytes`` and chunk
    sizes that add up to it.

    Raises
    ------
    IncompleteMessage
        The bytes are not (yet) complete JSON: a partial write or sync.
    EnvelopeError
        The JSON is complete but not a valid envelope (the reason says why).
    """
    # The steps run in this order (the first fault found is the one reported).
    doc = _head_object(data)
    meta, version, kind = _envelope_meta(doc)
    if expected_kind is not None and kind != expected_kind:
        raise EnvelopeError(f"expected a {expected_kind}, got a {kind}")
    mid = check_id(doc["id"])
    sender = fold_domain(_text(doc, "sender", limit=400))
    if not _EMAIL.match(sender):
        raise EnvelopeError(f"sender {sender[:80]!r} is not an email")
    url = _text(doc, "url")
    created, expires = _text(doc, "created"), _text(doc, "expires")
    parse_time(created), parse_time(expires)
    body = _stored_body(doc, meta, version, max_message_bytes)
    headers, status, method = _http_fields(doc)
    return Head(
        id=mid,
        kind=kind,
        sender=sender,
        url=url,
        created=created,
        expires=expires,
        headers=headers,
        size=body.size,
        storage=body.storage,
        inline_body=body.inline,
        chunks=body.chunks,
        encryption=body.encryption,
        status_code=status,
        method=method,
        version=version,
        raw=doc,
    )


def _head_object(data: bytes) -> dict[str, Any]:
    """The head as a JSON object with known top-level fields, the required ones there."""
    doc = strict_json.loads(data, max_bytes=MAX_HEAD_BYTES)
    if not isinstance(doc, dict):
        raise EnvelopeError("head is not a JSON object")
    unknown = set(doc) - _TOP_FIELDS
    if unknown:
        raise EnvelopeError(f"head has unknown fields {sorted(unknown)[:5]}")
    for name in ("id", "sender", "url", "created", "expires"):
        if name not in doc:
            raise EnvelopeError(f"head misses field {name!r}")
    return doc


def _envelope_meta(doc: Mapping[str, Any]) -> tuple[dict[str, Any], int, Kind]:
    """The ``syft_flwr`` object (a default one for plain syft-rpc), its version and kind."""
    meta = doc.get("syft_flwr")
    kind: str = "response" if "status_code" in doc else "request"
    if meta is None:
        # A plain syft-rpc message (no envelope): body inline, plaintext.
        meta = {"v": 0, "kind": kind, "storage": "inline", "encryption": None}
    if not isinstance(meta, dict):
        raise EnvelopeError("'syft_flwr' is not an object")
    unknown = set(meta) - _META_FIELDS
    if unknown:
        raise EnvelopeError(f"'syft_flwr' has unknown fields {sorted(unknown)[:5]}")
    version = _int_field(meta, "v", 0, 2**31, default=0)
    if version > ENVELOPE_VERSION:
        raise EnvelopeError(
            f"envelope version {version} is newer than this syft_flwr "
            f"understands ({ENVELOPE_VERSION}); upgrade syft_flwr"
        )
    kind = meta.get("kind", kind)
    if kind not in ("request", "response"):
        raise EnvelopeError(f"unknown kind {str(kind)[:40]!r}")
    return meta, version, kind  # type: ignore[return-value]


class _StoredBody(NamedTuple):
    """Where a head says its body is, checked: inline bytes or a chunk manifest."""

    storage: Literal["inline", "chunks"]
    encryption: dict[str, Any] | None
    inline: bytes
    size: int
    chunks: tuple[ChunkInfo, ...]


def _stored_body(
    doc: Mapping[str, Any],
    meta: Mapping[str, Any],
    version: int,
    max_message_bytes: int,
) -> _StoredBody:
    """The body's storage, encryption header, inline bytes, size and chunks, checked."""
    storage = meta.get("storage", "inline")
    if storage not in ("inline", "chunks"):
        raise EnvelopeError(f"unknown storage {str(storage)[:40]!r}")
    enc = meta.get("encryption")
    if enc is not None and not isinstance(enc, dict):
        raise EnvelopeError("'encryption' is not an object")
    body_b64 = doc.get("body") or ""
    if not isinstance(body_b64, str):
        raise EnvelopeError("head field 'body' must be a string")
    if storage == "chunks" and body_b64:
        raise EnvelopeError("a chunked body has an inline body too")
    try:
        inline_body = base64.b64decode(body_b64, validate=True) if body_b64 else b""
    except (binascii.Error, ValueError) as exc:
        raise EnvelopeError(f"inline body is not base64: {exc}") from exc
    size = _int_field(meta, "size", 0, max_message_bytes, default=len(inline_body))
    chunks: tuple[ChunkInfo, ...] = ()
    if storage == "chunks":
        chunks = _check_chunks(
            meta.get("chunks"), size, enc is not None, max_message_bytes
        )
    elif meta.get("chunks"):
        raise EnvelopeError("an inline body lists chunks")
    elif version >= 1 and not (
        size <= len(inline_body) <= size + (MAX_PART_OVERHEAD if enc else 0)
    ):
        raise ChunkIntegrityError(
            f"inline body of {len(inline_body)} bytes for a {size}-byte message"
        )
    return _StoredBody(storage, enc, inline_body, size, chunks)


def _http_fields(
    doc: Mapping[str, Any],
) -> tuple[dict[str, str], int | None, str | None]:
    """The syft-rpc headers, status code (replies) and method, each checked."""
    headers = doc.get("headers") or {}
    if not isinstance(headers, dict) or len(headers) > MAX_HEADERS:
        raise EnvelopeError(f"'headers' must be an object of at most {MAX_HEADERS}")
    for k, v in headers.items():
        if not isinstance(v, str) or len(k) > 256 or len(v) > MAX_TEXT:
            raise EnvelopeError(f"header {k[:40]!r} is not a short string")
    status = None
    if "status_code" in doc:
        status = _int_field(doc, "status_code", 100, 599)
    method = doc.get("method")
    if method is not None and (not isinstance(method, str) or len(method) > 16):
        raise EnvelopeError("'method' is not a short string")
    return dict(headers), status, method
