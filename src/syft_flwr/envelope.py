"""The on-disk envelope (format version 1): bytes <-> a head file plus chunk files.

The full specification is ``docs/envelope.md``. In short:

* The *head* is ``<id>.request`` / ``<id>.response``: JSON with syft-rpc's fields
  (``id, sender, url, method, headers, body, created, expires`` and
  ``status_code`` on responses), so other SyftBox tools can read it, plus one
  extra object ``"syft_flwr"`` describing how the body is stored::

      "syft_flwr": {"v": 1, "kind": "request", "size": 1234,
                    "storage": "inline" | "chunks",
                    "chunks": [{"size": 4194304, "sha256": "..."}, ...],
                    "encryption": null | {"alg": "...", "ek": "<base64>"}}

* Small bodies (<= ``inline_limit``) travel base64'd in ``body``, as syft-rpc
  does. Larger bodies go to raw binary chunk files ``<id>.<kind>.<nnnnnn>.chunk``
  next to the head, each at most ``chunk_size`` bytes and each with its sha256
  in the head. Chunks are written first and the head last, so the head's
  appearance commits the message.
* Encryption (see ``syft_flwr.crypto``) is a :class:`BodyCodec` applied per chunk;
  the head then carries the algorithm and the ephemeral public key.
* A reader treats unparsable JSON, a missing chunk or a chunk whose size or
  hash does not match as :class:`~syft_flwr.errors.IncompleteMessage`: "not
  ready yet, try again", never "bad message". Only a head that parses but breaks
  the format raises :class:`~syft_flwr.errors.EnvelopeError`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from syft_flwr._email import fold_domain
from syft_flwr.errors import ChunkIntegrityError, EnvelopeError, IncompleteMessage

__all__ = [
    "ENVELOPE_VERSION",
    "BodyCodec",
    "ChunkInfo",
    "Head",
    "PlainCodec",
    "SealContext",
    "chunk_name",
    "decode_body",
    "encode_message",
    "format_time",
    "head_name",
    "parse_head",
    "parse_time",
]

ENVELOPE_VERSION = 1
#: Bytes kept free in a head for everything but the inline body.
HEAD_RESERVE = 2048
CONTENT_TYPE = "application/vnd.flower.message+protobuf"
Kind = Literal["request", "response"]


def format_time(ts: float) -> str:
    """Return the ISO-8601 UTC form syft-rpc uses (``2026-11-23T19:36:47.489702+00:00``)."""
    return datetime.fromtimestamp(ts, tz=UTC).isoformat()


def parse_time(value: str) -> float:
    """Parse an ISO-8601 timestamp (``Z`` accepted) into a POSIX timestamp."""
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (ValueError, AttributeError) as exc:
        raise EnvelopeError(f"invalid timestamp {value!r}") from exc
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


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
class SealContext:
    """Everything a body is bound to; used as AEAD associated data when encrypting."""

    message_id: str
    sender: str
    recipient: str
    app: str
    endpoint: str
    kind: Kind
    expires: str


@dataclass(frozen=True)
class ChunkInfo:
    size: int
    sha256: str


class BodyCodec(ABC):
    """Turns a body into the byte parts stored on disk, and back (bytes -> bytes)."""

    #: Value of ``syft_flwr.encryption.alg``, or ``None`` for plaintext.
    algorithm: str | None = None
    #: Bytes a part grows by (e.g. the AEAD tag); chunks are planned around it.
    overhead: int = 0

    @abstractmethod
    def seal(
        self, ctx: SealContext, parts: Sequence[memoryview]
    ) -> tuple[dict[str, Any] | None, list[bytes]]:
        """Return ``(encryption header or None, stored parts)`` for plaintext parts."""

    @abstractmethod
    def open(
        self,
        ctx: SealContext,
        header: Mapping[str, Any] | None,
        parts: Sequence[bytes],
    ) -> bytes:
        """Return the plaintext body from stored parts (raises on tampering)."""


class PlainCodec(BodyCodec):
    """No encryption: stored parts are the plaintext slices."""

    def seal(
        self, ctx: SealContext, parts: Sequence[memoryview]
    ) -> tuple[dict[str, Any] | None, list[bytes]]:
        # Slices of the caller's buffer, not copies: a 100 MB body stays 100 MB.
        return None, list(parts)  # type: ignore[arg-type]

    def open(
        self,
        ctx: SealContext,
        header: Mapping[str, Any] | None,
        parts: Sequence[bytes],
    ) -> bytes:
        return b"".join(parts)


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


def _plan_parts(
    body: memoryview, inline_limit: int, chunk_payload: int
) -> list[memoryview]:
    if len(body) <= inline_limit:
        return [body]
    n = max(1, math.ceil(len(body) / chunk_payload))
    return [body[i * chunk_payload : (i + 1) * chunk_payload] for i in range(n)]


def encode_message(
    *,
    ctx: SealContext,
    url: str,
    body: bytes | memoryview,
    created: str,
    codec: BodyCodec,
    chunk_size: int,
    inline_limit: int,
    status_code: int | None = None,
    headers: Mapping[str, str] | None = None,
) -> tuple[bytes, list[tuple[str, bytes]]]:
    """Encode a body into ``(head bytes, [(chunk file name, chunk bytes), ...])``.

    Write the chunks first and the head last (the head commits the message).
    Every chunk is at most ``chunk_size`` bytes; bodies up to ``inline_limit``
    travel inline in the head.
    """
    view = memoryview(body).cast("B")
    # The head carries the inline body base64'd (4/3) plus some JSON; keep it
    # under chunk_size too, so no file ever exceeds the limit.
    room = (chunk_size - HEAD_RESERVE) * 3 // 4 - codec.overhead
    inline_limit = min(inline_limit, max(0, room))
    parts = _plan_parts(view, inline_limit, chunk_size - codec.overhead)
    enc_header, stored = codec.seal(ctx, parts)
    inline = len(view) <= inline_limit
    meta: dict[str, Any] = {
        "v": ENVELOPE_VERSION,
        "kind": ctx.kind,
        "size": len(view),
        "storage": "inline" if inline else "chunks",
        "chunks": []
        if inline
        else [
            {"size": len(p), "sha256": hashlib.sha256(p).hexdigest()} for p in stored
        ],
        "encryption": enc_header,
    }
    hdrs = {"content-type": CONTENT_TYPE, "x-syft-flwr-envelope": str(ENVELOPE_VERSION)}
    if headers:
        hdrs.update(headers)
    doc: dict[str, Any] = {
        "id": ctx.message_id,
        "sender": ctx.sender,
        "url": url,
        "headers": hdrs,
        "body": base64.b64encode(stored[0]).decode("ascii") if inline else "",
        "created": created,
        "expires": ctx.expires,
    }
    if ctx.kind == "request":
        doc["method"] = "POST"
    else:
        doc["status_code"] = 200 if status_code is None else int(status_code)
    doc["syft_flwr"] = meta
    head = json.dumps(doc, separators=(",", ":")).encode("utf-8")
    if len(head) > chunk_size:
        # Only with absurdly small chunks for the body size (the manifest grows
        # ~90 bytes per chunk): refuse rather than write a file over the limit.
        raise EnvelopeError(
            f"a {len(view)}-byte body needs {len(stored)} chunks of {chunk_size} "
            f"bytes, and their list ({len(head)} bytes) exceeds the chunk size; "
            "raise SYFT_FLWR_CHUNK_SIZE"
        )
    chunks = (
        []
        if inline
        else [
            (chunk_name(ctx.message_id, ctx.kind, i), p) for i, p in enumerate(stored)
        ]
    )
    return head, chunks


def parse_head(data: bytes, *, expected_kind: Kind | None = None) -> Head:
    """Parse a head file.

    Raises
    ------
    IncompleteMessage
        The bytes are not (yet) complete JSON: a partial write or sync.
    EnvelopeError
        The JSON is complete but not a valid envelope.
    """
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise IncompleteMessage(f"head is not complete JSON yet: {exc}") from exc
    if not isinstance(doc, dict):
        raise EnvelopeError("head is not a JSON object")
    try:
        meta = doc.get("syft_flwr")
        kind = "response" if "status_code" in doc else "request"
        if meta is None:
            # A plain syft-rpc message (no envelope): body inline, plaintext.
            meta = {"v": 0, "kind": kind, "storage": "inline", "encryption": None}
        if not isinstance(meta, dict):
            raise EnvelopeError("'syft_flwr' is not an object")
        version = int(meta.get("v", 0))
        if version > ENVELOPE_VERSION:
            raise EnvelopeError(
                f"envelope version {version} is newer than this syft_flwr "
                f"understands ({ENVELOPE_VERSION}); upgrade syft_flwr"
            )
        kind = meta.get("kind", kind)
        if kind not in ("request", "response"):
            raise EnvelopeError(f"unknown kind {kind!r}")
        if expected_kind is not None and kind != expected_kind:
            raise EnvelopeError(f"expected a {expected_kind}, got a {kind}")
        storage = meta.get("storage", "inline")
        body_b64 = doc.get("body") or ""
        inline_body = base64.b64decode(body_b64, validate=True) if body_b64 else b""
        chunks = tuple(
            ChunkInfo(size=int(c["size"]), sha256=str(c["sha256"]))
            for c in meta.get("chunks", [])
        )
        if storage not in ("inline", "chunks"):
            raise EnvelopeError(f"unknown storage {storage!r}")
        if storage == "chunks" and not chunks:
            raise EnvelopeError("chunked body lists no chunks")
        enc = meta.get("encryption")
        if enc is not None and not isinstance(enc, dict):
            raise EnvelopeError("'encryption' is not an object")
        size = int(meta.get("size", len(inline_body)))
        headers = doc.get("headers") or {}
        if not isinstance(headers, dict):
            raise EnvelopeError("'headers' is not an object")
        return Head(
            id=str(doc["id"]),
            kind=kind,
            sender=fold_domain(str(doc["sender"])),
            url=str(doc["url"]),
            created=str(doc["created"]),
            expires=str(doc["expires"]),
            headers={str(k): str(v) for k, v in headers.items()},
            size=size,
            storage=storage,
            inline_body=inline_body,
            chunks=chunks,
            encryption=enc,
            status_code=int(doc["status_code"]) if "status_code" in doc else None,
            method=doc.get("method"),
            version=version,
            raw=doc,
        )
    except KeyError as exc:
        raise EnvelopeError(f"head misses field {exc}") from exc
    except (TypeError, ValueError, binascii.Error) as exc:
        if isinstance(exc, EnvelopeError):
            raise
        raise EnvelopeError(f"invalid head: {exc}") from exc


def decode_body(
    head: Head,
    ctx: SealContext,
    codec: BodyCodec,
    read_chunk: Callable[[str], bytes],
) -> bytes:
    """Return the plaintext body of ``head``, reading chunk files with ``read_chunk``.

    ``read_chunk(name)`` must raise ``IncompleteMessage`` (or any ``OSError``)
    when a chunk is not there yet.

    Raises
    ------
    IncompleteMessage
        A chunk is missing or does not match its size/hash yet.
    ChunkIntegrityError
        The decoded body does not have the announced size.
    """
    if head.storage == "inline":
        parts = [head.inline_body]
    else:
        parts = []
        for i, info in enumerate(head.chunks):
            name = chunk_name(head.id, head.kind, i)
            try:
                data = read_chunk(name)
            except OSError as exc:
                raise IncompleteMessage(f"chunk {name} not available yet") from exc
            if (
                len(data) != info.size
                or hashlib.sha256(data).hexdigest() != info.sha256
            ):
                # A sync client may still be writing it in place: not ready yet.
                raise IncompleteMessage(
                    f"chunk {name} does not match its manifest yet "
                    f"({len(data)} of {info.size} bytes)"
                )
            parts.append(data)
    body = codec.open(ctx, head.encryption, parts)
    if head.version >= 1 and len(body) != head.size:
        raise ChunkIntegrityError(
            f"body of {head.id} is {len(body)} bytes, head announced {head.size}"
        )
    return body
