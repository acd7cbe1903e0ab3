"""Request/response files over any transport: the syft-rpc layout with our envelope.

A request from ``S`` to ``R`` for ``<app>``/``<endpoint>`` lives at::

    R/app_data/<app>/rpc/<endpoint>/S/<id>.request     (+ <id>.request.<n>.chunk)
    R/app_data/<app>/rpc/<endpoint>/S/<id>.response    (+ <id>.response.<n>.chunk)

The sender writes the request into its copy of ``R``'s datasite; ``R`` answers
next to it. This module knows the layout and the envelope, not Flower and not
the backend: a :class:`~syft_flwr.transports.base.Transport` moves the files and
a :class:`CodecPolicy` decides how bodies are sealed (plaintext or encrypted).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from syft_flwr import progress
from syft_flwr._email import fold_domain
from syft_flwr.config import Settings
from syft_flwr.errors import (
    EncryptionError,
    EnvelopeError,
    MessageNotFound,
    PermissionDenied,
    PlaintextRefused,
    SecurityError,
    TransportError,
    UnknownSenderError,
    UnsignedHeadError,
)
from syft_flwr.transports.base import RpcPath, Transport, Watch, join_key
from syft_flwr.wire import frames
from syft_flwr.wire.blobs import (
    TAG_SIZE,
    BlobRef,
    chunk_file_name,
    pack_attached,
    read_blob,
    unpack_attached,
    write_blob,
)
from syft_flwr.wire.envelope import (
    MAX_HEAD_BYTES,
    SIGNED_HEAD_VERSION,
    BodyCodec,
    Head,
    Kind,
    PlainCodec,
    SealContext,
    chunk_name,
    decode_body,
    encode_message,
    format_time,
    head_name,
    parse_head,
)
from syft_flwr.wire.reasons import reason_text

__all__ = [
    "CodecPolicy",
    "Incoming",
    "Part",
    "PlaintextPolicy",
    "StoredParts",
    "SyftFlwrRpc",
    "attachment_chunk_name",
    "message_files",
]

#: A large part of a message: bytes to store next to it, or a blob already stored
#: in the sender's shared folder (:meth:`SyftFlwrRpc.put_shared`).
Part = bytes | memoryview | BlobRef
#: Seconds a data owner keeps the last shared attachment it read, so several
#: requests naming the same blob read it once.
SHARED_CACHE_SECONDS = 60.0
#: Messages whose chunk files this side remembers having written (so deleting
#: them needs no folder listing); the oldest are forgotten past this number.
MAX_REMEMBERED_WRITES = 4096


def attachment_chunk_name(message_id: str, kind: Kind, part: int, index: int) -> str:
    """File name of chunk ``index`` of attachment ``part`` stored next to a message.

    ``<id>.<kind>.a<part>.<nnnnnn>.chunk``: it starts with ``<id>.<kind>.``, so
    deleting a message's files deletes its attachments too.
    """
    return chunk_file_name(f"{message_id}.{kind}.a{part}", index)


@dataclass(frozen=True)
class StoredParts:
    """A message as stored before its head is written (the head commits it).

    Handed to ``send_response(before_head=...)`` so the data owner can keep the
    reply it is about to send without writing it again (:meth:`SyftFlwrRpc.link_parts`).
    """

    #: The plaintext the head seals: with attachments, their references
    #: (content keys included) followed by the body without its parts
    #: (:func:`~syft_flwr.wire.blobs.pack_attached`); else the body itself.
    body: bytes | memoryview
    #: Transport key of every stored chunk, per attachment (empty: none).
    chunks: tuple[tuple[str, ...], ...] = ()


def message_files(message: Incoming) -> tuple[str, ...]:
    """Names of the files stored next to ``message``'s head: chunks, attachments.

    Taken from its head (chunk count) and its attachment references (shared
    attachments live elsewhere and are not named).
    """
    head = message.head
    names = [chunk_name(head.id, head.kind, i) for i in range(len(head.chunks))]
    for k, ref in enumerate(message.attachments):
        if ref.shared is None:
            names.extend(
                attachment_chunk_name(head.id, head.kind, k, i)
                for i in range(ref.count)
            )
    return tuple(names)


def _check_head_signed(head: Head) -> None:
    """Refuse a sealed message whose unsigned head fields would steer its reader.

    Before envelope version 3 only the body was sealed: a status or creation
    time there could have been changed by anyone who can write the file. The
    one such message still read is a sealed 200 reply (a status changed to 200
    only makes an error reply unreadable; nothing else in it is acted on).

    Raises
    ------
    UnsignedHeadError
        A sealed request, or a sealed non-200 reply, of an older version.
    """
    if not head.encrypted or head.version >= SIGNED_HEAD_VERSION:
        return
    if head.kind == "response" and (head.status_code or 200) == 200:
        return
    what = f"status {head.status_code} reply" if head.kind == "response" else "request"
    raise UnsignedHeadError(
        f"{what} {head.id} from {head.sender} was written by an older syft_flwr "
        f"(envelope version {head.version}), which does not sign its head: its "
        "status and creation time cannot be trusted, so it is not taken as "
        f"{head.sender}'s; upgrade syft_flwr on both sides"
    )


class CodecPolicy(Protocol):
    """Chooses the body codec for each message (see ``syft_flwr.crypto``)."""

    #: When True, plaintext incoming messages are refused and outgoing ones sealed.
    required: bool

    def for_sending(self, ctx: SealContext) -> BodyCodec:
        """Codec to seal a body addressed to ``ctx.recipient``."""
        ...

    def for_receiving(self, ctx: SealContext, head: Head) -> BodyCodec:
        """Codec to open a body sent by ``ctx.sender`` (raise to refuse it)."""
        ...


class PlaintextPolicy:
    """Encryption off: bodies are stored as they are; encrypted ones are refused."""

    required = False

    def for_sending(self, ctx: SealContext) -> BodyCodec:
        return PlainCodec()

    def for_receiving(self, ctx: SealContext, head: Head) -> BodyCodec:
        if head.encrypted:
            raise EncryptionError(
                f"{head.kind} {head.id} from {ctx.sender} is encrypted but encryption is "
                "off here; set SYFT_FLWR_ENCRYPTION_ENABLED the same on both sides"
            )
        return PlainCodec()


@dataclass(frozen=True)
class Incoming:
    """A decoded request or response."""

    path: RpcPath
    head: Head
    #: The plaintext body; a :class:`~syft_flwr.wire.frames.FramedBody` (a prefix with
    #: its parts as separate buffers) when the message had attachments.
    body: bytes
    #: The references of those attachments, in order (content keys included).
    attachments: tuple[BlobRef, ...] = ()

    @property
    def id(self) -> str:
        return self.head.id

    @property
    def size(self) -> int:
        """Plaintext bytes of the body, attachments included."""
        return frames.total_size(self.body)

    @property
    def sender(self) -> str:
        return self.head.sender


class SyftFlwrRpc:
    """Write and read request/response files for one app.

    Parameters
    ----------
    transport:
        Moves the files; its ``identity`` is the local user.
    app_name:
        The app folder name under ``app_data`` (may contain ``/``).
    settings:
        Chunk size and inline limit; defaults to ``Settings.from_env()``.
    policy:
        Body codec policy; defaults to plaintext.
    clock:
        Returns POSIX time; injectable for expiry tests.
    """

    def __init__(
        self,
        transport: Transport,
        app_name: str,
        *,
        settings: Settings | None = None,
        policy: CodecPolicy | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.transport = transport
        self.app_name = app_name.strip("/")
        self.settings = settings or Settings.from_env()
        self.policy: CodecPolicy = policy or PlaintextPolicy()
        self.clock = clock
        chunk = self.settings.chunk_size
        if transport.max_file_size is not None:
            chunk = min(chunk, transport.max_file_size)
        self.chunk_size = chunk
        self._shared_cache: tuple[float, str, BlobRef, bytes] | None = None
        self._shared_lock = threading.Lock()
        # head key -> names of the chunk files written next to it (often none)
        self._written: dict[str, tuple[str, ...]] = {}
        self._written_lock = threading.Lock()

    @property
    def identity(self) -> str:
        return self.transport.identity

    # -- layout -------------------------------------------------------------------
    def url(self, owner: str, endpoint: str) -> str:
        return f"syft://{owner}/app_data/{self.app_name}/rpc/{endpoint.strip('/')}"

    def folder(self, owner: str, endpoint: str, peer: str) -> str:
        """Key of the folder holding ``peer``'s exchanges with ``owner``."""
        return join_key(
            owner, "app_data", self.app_name, "rpc", endpoint.strip("/"), peer
        )

    def endpoint_prefix(self, owner: str, endpoint: str) -> str:
        return join_key(owner, "app_data", self.app_name, "rpc", endpoint.strip("/"))

    def head_key(
        self, owner: str, endpoint: str, peer: str, mid: str, kind: Kind
    ) -> str:
        return f"{self.folder(owner, endpoint, peer)}/{head_name(mid, kind)}"

    # -- writing ------------------------------------------------------------------
    def _write(
        self,
        *,
        folder: str,
        ctx: SealContext,
        url: str,
        body: bytes | memoryview,
        status_code: int | None = None,
        headers: Mapping[str, str] | None = None,
        plaintext: bool = False,
        parts: Sequence[Part] | None = None,
        before_head: Callable[[StoredParts], None] | None = None,
    ) -> None:
        codec = PlainCodec() if plaintext else self.policy.for_sending(ctx)
        written: list[str] = []
        sealed, stored = self._attach(
            folder,
            ctx,
            body,
            parts,
            encrypt=codec.algorithm is not None,
            into=written,
        )
        head, chunks = encode_message(
            ctx=ctx,
            url=url,
            body=sealed,
            created=format_time(self.clock()),
            codec=codec,
            chunk_size=self.chunk_size,
            inline_limit=self.settings.inline_limit,
            status_code=status_code,
            headers=headers,
        )
        # Chunks first, head last: the head's appearance commits the message.
        for name, data in chunks:
            self.transport.put(f"{folder}/{name}", data)
            written.append(name)
        if before_head is not None:
            before_head(StoredParts(sealed, stored))
        key = f"{folder}/{head_name(ctx.message_id, ctx.kind)}"
        self._remember(key, written)
        self.transport.put(key, head)

    def _remember(self, head_key: str, files: Sequence[str]) -> None:
        with self._written_lock:
            self._written.pop(head_key, None)
            self._written[head_key] = tuple(files)
            while len(self._written) > MAX_REMEMBERED_WRITES:
                del self._written[next(iter(self._written))]

    def _attach(
        self,
        folder: str,
        ctx: SealContext,
        body: bytes | memoryview,
        parts: Sequence[Part] | None,
        *,
        encrypt: bool,
        into: list[str],
    ) -> tuple[bytes | memoryview, tuple[tuple[str, ...], ...]]:
        """Store a body's large parts as attachments; return the body to seal.

        ``parts=None`` takes them from an inline framed body (without copying).
        Each part not already stored (a :class:`BlobRef`) is written next to the
        message under a fresh content key; the references, keys included, go
        into the sealed body. The names of the files written are added to
        ``into``; the transport keys of each attachment's chunks are returned
        too (none for a shared one).
        """
        if parts is None:
            body, parts = frames.detach(body)
        if not parts:
            return body, ()
        refs = []
        keys: list[tuple[str, ...]] = []
        total = sum(len(p) for p in parts if not isinstance(p, BlobRef))
        with progress.transfer(ctx.recipient, "send", total) as shown:
            for k, part in enumerate(parts):
                if isinstance(part, BlobRef):
                    refs.append(part)
                    keys.append(())
                    continue
                names: list[str] = []

                def put(
                    i: int, data: bytes, k: int = k, out: list[str] = names
                ) -> None:
                    name = attachment_chunk_name(ctx.message_id, ctx.kind, k, i)
                    self.transport.put(f"{folder}/{name}", data)
                    out.append(name)
                    shown.advance(len(data))

                refs.append(
                    write_blob(
                        part,
                        put,
                        blob_id=uuid.uuid4().hex,
                        chunk_payload=self._blob_payload(encrypt),
                        encrypt=encrypt,
                        # A reply's reader sets a chunk that does not open aside
                        # and reads again on the next change; a data owner
                        # answers a request once, so its chunks carry digests
                        # to tell "still syncing" from "altered".
                        digests=ctx.kind == "request",
                    )
                )
                into.extend(names)
                keys.append(tuple(f"{folder}/{n}" for n in names))
        return pack_attached(refs, body), tuple(keys)

    def _blob_payload(self, encrypt: bool) -> int:
        return self.chunk_size - (TAG_SIZE if encrypt else 0)

    # -- shared attachments (one blob for several recipients) ------------------------
    @property
    def can_share(self) -> bool:
        """Whether the transport can store one blob for several readers."""
        return self.transport.can_share

    def shared_folder(self, owner: str, group: str) -> str:
        """Key of ``owner``'s shared blob folder ``group`` for this app."""
        return join_key(owner, "app_data", self.app_name, "blobs", group)

    def new_shared_group(self, readers: Iterable[str], expires_at: float) -> str:
        """Create a shared blob folder readable by ``readers``; return its name.

        The name carries the expiry, so :meth:`sweep_shared` can remove what a
        crashed run left behind.
        """
        group = f"g{int(expires_at)}-{uuid.uuid4().hex[:16]}"
        self.transport.share(
            self.shared_folder(self.identity, group),
            sorted({fold_domain(r) for r in readers}),
        )
        return group

    def put_shared(self, group: str, data: bytes | memoryview) -> BlobRef:
        """Store ``data`` once in shared folder ``group``; return its reference.

        Encrypted under a fresh content key when encryption is on; each request
        that names the reference carries the key sealed for its own recipient.
        """
        folder = self.shared_folder(self.identity, group)
        blob_id = uuid.uuid4().hex
        encrypt = self.policy.required
        with progress.transfer("the data owners (shared)", "send", len(data)) as shown:

            def put(i: int, chunk: bytes) -> None:
                self.transport.put(f"{folder}/{chunk_file_name(blob_id, i)}", chunk)
                shown.advance(len(chunk))

            return write_blob(
                data,
                put,
                blob_id=blob_id,
                chunk_payload=self._blob_payload(encrypt),
                encrypt=encrypt,
                shared=group,
            )

    def delete_shared(self, group: str) -> None:
        """Delete shared folder ``group`` (its chunks, then its permission files)."""
        folder = self.shared_folder(self.identity, group)
        keys = self.transport.list(folder)
        chunks = [k for k in keys if k.endswith(".chunk")]
        self.transport.delete_many(chunks)
        self.transport.delete_many([k for k in keys if not k.endswith(".chunk")])
        self.transport.unshare(folder)  # the folder itself: nothing left behind

    def sweep_shared(self, now: float | None = None) -> int:
        """Delete this party's shared blob folders whose requests have expired.

        Returns the number of folders removed.
        """
        now = self.clock() if now is None else now
        base = join_key(self.identity, "app_data", self.app_name, "blobs")
        groups: set[str] = set()
        # Folders, not files: one left empty by a crash before its first
        # upload is found too.
        for key in self.transport.shared_folders(base):
            group = key[len(base) + 1 :]
            stamp = group[1:].split("-", 1)[0]
            if group.startswith("g") and stamp.isdigit() and int(stamp) < now:
                groups.add(group)
        for group in groups:
            self.delete_shared(group)
        return len(groups)

    def send_request(
        self,
        recipient: str,
        endpoint: str,
        body: bytes | memoryview,
        *,
        expires_at: float,
        message_id: str | None = None,
        headers: Mapping[str, str] | None = None,
        parts: Sequence[Part] | None = None,
    ) -> str:
        """Write a request for ``recipient``; return its id.

        ``body`` may be an inline framed body (its large parts become
        attachments), or a detached one with its ``parts`` given separately
        (bytes to store next to the request, or shared :class:`BlobRef`).
        """
        mid = message_id or str(uuid.uuid4())
        recipient = fold_domain(recipient)
        ctx = SealContext(
            message_id=mid,
            sender=self.identity,
            recipient=recipient,
            app=self.app_name,
            endpoint=endpoint.strip("/"),
            kind="request",
            expires=format_time(expires_at),
        )
        self._write(
            folder=self.folder(recipient, endpoint, self.identity),
            ctx=ctx,
            url=self.url(recipient, endpoint),
            body=body,
            headers=headers,
            parts=parts,
        )
        return mid

    def send_response(
        self,
        request: Incoming | RpcPath,
        *,
        request_id: str | None = None,
        expires: str | None = None,
        status_code: int = 200,
        body: bytes | memoryview = b"",
        headers: Mapping[str, str] | None = None,
        plaintext: bool = False,
        before_head: Callable[[StoredParts], None] | None = None,
    ) -> None:
        """Answer a request (decoded, or only located when it could not be read).

        ``plaintext`` is only for refusals that cannot be sealed: their body is
        the refusal reason, never data. ``before_head`` is called once the
        reply's attachments (if any) are stored and before its head makes it
        visible: the data owner keeps the reply there (:meth:`link_parts`).
        """
        if plaintext and status_code == 200:
            raise ValueError("only refusals may be sent unencrypted")
        if isinstance(request, Incoming):
            path, mid, exp = request.path, request.id, request.head.expires
        else:
            path = request
            mid = request_id or request.name.split(".")[0]
            exp = expires or format_time(self.clock() + 3600)
        ctx = SealContext(
            message_id=mid,
            sender=self.identity,
            recipient=path.peer,
            app=self.app_name,
            endpoint=path.endpoint,
            kind="response",
            expires=exp,
        )
        self._write(
            folder=path.folder,
            ctx=ctx,
            url=self.url(path.owner, path.endpoint),
            body=body,
            status_code=status_code,
            headers=headers,
            plaintext=plaintext,
            before_head=before_head,
        )

    def link_parts(self, stored: StoredParts, dest: Path, stem: str) -> bool:
        """Give the chunks of ``stored``'s attachments private names in ``dest``.

        Chunk ``i`` of attachment ``k`` becomes ``dest/<stem>.a<k>.<i:06d>.chunk``
        (:func:`~syft_flwr.wire.blobs.chunk_file_name`), a hard link where the
        backend allows it: the sealed bytes are stored once and stay when the
        message's files are deleted. Returns False (and links nothing) when
        there are no attachments or they cannot all be linked (another
        backend, another disk, a shared attachment): the caller keeps a copy.
        """
        if not stored.chunks or any(not c for c in stored.chunks):
            return False
        stems = [f"{stem}.a{k}" for k in range(len(stored.chunks))]
        return self._link_chunks(stored.chunks, dest, stems)

    def _link_chunks(
        self, keys: Sequence[Sequence[str]], dest: Path, stems: Sequence[str]
    ) -> bool:
        """Link every chunk of every part into ``dest``: all of them, or none.

        Chunk ``i`` of part ``k`` (transport key ``keys[k][i]``) becomes
        ``dest/<stems[k]>.<i:06d>.chunk``. Returns False, leaving no link, if
        one cannot be made.
        """
        made: list[Path] = []
        for part_keys, stem in zip(keys, stems, strict=True):
            for i, key in enumerate(part_keys):
                target = dest / chunk_file_name(stem, i)
                if not self.transport.link_out(key, target):
                    for p in made:
                        p.unlink(missing_ok=True)
                    return False
                made.append(target)
        return True

    # -- reading ------------------------------------------------------------------
    def read(
        self, key: str, *, raw_head: bytes | None = None, head: Head | None = None
    ) -> Incoming:
        """Read and decode the head file at ``key`` and its chunks.

        ``raw_head`` is the head's bytes when the caller already read them (saves
        a second read, which on Drive is a second download); ``head`` is the
        head already parsed from them by :func:`parse_head` with this side's
        ``max_message_bytes`` (saves a second parse). Every other check runs.

        Raises
        ------
        MessageNotFound
            No head file at ``key``.
        IncompleteMessage
            Partial head, or chunks not all there yet: retry later.
        EnvelopeError
            The head is complete but malformed.
        UnknownSenderError
            The head's sender is not the party whose folder it sits in.
        EncryptionError
            The body cannot be opened (tampered, wrong keys, plaintext refused).
        """
        path = RpcPath.parse(key)
        if path is None or path.app != self.app_name:
            raise MessageNotFound(f"{key} is not a message of app {self.app_name}")
        kind: Kind = "response" if path.name.endswith(".response") else "request"
        if head is None:
            data = raw_head if raw_head is not None else self.read_head_bytes(key)
            head = parse_head(
                data,
                expected_kind=kind,
                max_message_bytes=self.settings.max_message_bytes,
            )
        elif head.kind != kind:
            raise EnvelopeError(f"expected a {kind}, got a {head.kind}")
        # Who may have written this file: the requester writes into its own
        # sub-folder, the folder owner answers next to it.
        expected_sender = path.peer if kind == "request" else path.owner
        if head.sender != expected_sender:
            raise UnknownSenderError(
                f"{kind} {head.id} claims sender {head.sender} but sits in the folder "
                f"of {expected_sender}"
            )
        if head.id != path.name.rsplit(".", 1)[0]:
            raise UnknownSenderError(
                f"{kind} file {path.name} carries a different id ({head.id})"
            )
        ctx = self._context_of(path, head)
        # A refusal (non-200 response) may come in clear when the data owner
        # could not seal it. With encryption on, nothing proves who wrote such a
        # file, so it never counts as the data owner's answer: it is refused
        # with the reason it claims (useful in logs, never trusted).
        refusal = kind == "response" and (head.status_code or 200) != 200
        if self.policy.required and not head.encrypted:
            if refusal and head.storage == "inline":
                claimed = reason_text(head.inline_body, limit=200)
                raise PlaintextRefused(
                    f"an unauthenticated refusal (status {head.status_code}, not "
                    f"sealed by {head.sender}) says: {claimed!r}"
                )
            raise PlaintextRefused(
                f"{kind} {head.id} from {head.sender} is not encrypted, but encryption "
                "is required here (SYFT_FLWR_ENCRYPTION_ENABLED)"
            )
        if self.policy.required:
            _check_head_signed(head)
        codec = (
            PlainCodec()
            if refusal and not head.encrypted
            else self.policy.for_receiving(ctx, head)
        )
        folder = path.folder
        # Each chunk is read up to the size its (validated) manifest gives it.
        limits = {
            chunk_name(head.id, head.kind, i): c.size for i, c in enumerate(head.chunks)
        }
        body = decode_body(
            head,
            ctx,
            codec,
            lambda n: self.transport.read_limited(f"{folder}/{n}", limits[n]),
        )
        refs: list[BlobRef] = []
        if head.version >= 2:
            body, refs = self._read_attachments(path, head, body)
        return Incoming(path=path, head=head, body=body, attachments=tuple(refs))

    def _context_of(self, path: RpcPath, head: Head) -> SealContext:
        """What a message at ``path`` with ``head`` must have been sealed with."""
        return SealContext(
            message_id=head.id,
            sender=head.sender,
            recipient=path.owner if head.kind == "request" else path.peer,
            app=self.app_name,
            endpoint=path.endpoint,
            kind=head.kind,
            expires=head.expires,
            head=head.signed_fields,
        )

    def vouch_for_reply(self, key: str) -> bool:
        """Whether the reply file at ``key`` is one this side wrote, as it stands.

        Its head must parse, name this side as sender and the file's own id,
        and (encryption on) carry this side's signature over that id, its
        recipient and every signed head field, in a version its reader accepts.
        A reply copied from another request, or altered, is not vouched for.
        With encryption off nothing is signed: sender and id are all there is.

        Raises
        ------
        MessageNotFound
            No file at ``key`` (gone meanwhile).
        """
        path = RpcPath.parse(key)
        if path is None or path.app != self.app_name:
            return False
        try:
            head = parse_head(
                self.read_head_bytes(key),
                expected_kind="response",
                max_message_bytes=self.settings.max_message_bytes,
            )
        except MessageNotFound:
            raise
        except (EnvelopeError, TransportError):
            return False
        if head.sender != self.identity or head.id != path.name.rsplit(".", 1)[0]:
            return False
        if not self.policy.required:
            return True
        vouch = getattr(self.policy, "vouch_sent", None)
        if vouch is None or not head.encrypted:
            return False
        try:
            _check_head_signed(head)
            vouch(self._context_of(path, head), head)
        except (EncryptionError, SecurityError, EnvelopeError, TransportError):
            return False
        return True

    def _read_attachments(
        self, path: RpcPath, head: Head, body: bytes
    ) -> tuple[bytes, list[BlobRef]]:
        """Return ``body``, or a FramedBody with its attachments read, if it has any."""
        refs, inner = unpack_attached(body, max_total=self.settings.max_message_bytes)
        if not refs:
            return body, refs
        if self.policy.required and any(r.key is None for r in refs):
            raise PlaintextRefused(
                f"{head.kind} {head.id} from {head.sender} has a plaintext attachment "
                "while encryption is on; refusing it"
            )
        parts = []
        for k, ref in enumerate(refs):
            if ref.shared is None:

                def name_of(i: int, k: int = k) -> str:
                    chunk = attachment_chunk_name(head.id, head.kind, k, i)
                    return f"{path.folder}/{chunk}"

                parts.append(self._read_blob(ref, name_of, head.sender))
            else:
                parts.append(self._read_shared(head.sender, ref))
        return frames.FramedBody(bytes(inner), parts), refs

    def _read_blob(
        self, ref: BlobRef, name_of: Callable[[int], str], peer: str
    ) -> bytes:
        # Progress starts once the last chunk is there (read_blob reads it
        # first): a read that finds the attachment still syncing stops before
        # and shows nothing, instead of a "failed" transfer at every retry.
        shown: list[progress.TransferHandle] = []

        def read(i: int, limit: int) -> bytes:
            data = self.transport.read_limited(name_of(i), limit)
            if not shown:
                shown.append(progress.transfer(peer, "receive", ref.size))
            shown[0].advance(ref.stored_size(i) - ref.overhead)  # plaintext bytes
            return data

        try:
            out = read_blob(ref, read)
        except BaseException:
            if shown:
                shown[0].done(ok=False)
            raise
        if shown:
            shown[0].done()
        return out

    def _read_shared(self, owner: str, ref: BlobRef) -> bytes:
        """Read a blob from ``owner``'s shared folder; the last one is kept a while."""
        assert ref.shared is not None
        now = time.monotonic()
        with self._shared_lock:
            hit = self._shared_cache
            if (
                hit is not None
                and hit[1:3] == (owner, ref)
                and now - hit[0] < SHARED_CACHE_SECONDS
            ):
                return hit[3]
            self._shared_cache = None  # release the old one before reading
        folder = self.shared_folder(owner, ref.shared)
        data = self._read_blob(
            ref, lambda i: f"{folder}/{chunk_file_name(ref.id, i)}", owner
        )
        with self._shared_lock:
            self._shared_cache = (now, owner, ref, data)
        return data

    def keep_attachments(self, incoming: Incoming, dest: Path) -> list[str] | None:
        """Give a message's attachment chunks private names in folder ``dest``.

        For a record that must outlive the exchange (the researcher's resume
        journal): where the backend can link a file (local folders on one disk)
        the chunks already on disk are kept as they are, sealed, without writing
        them again; deleting the exchange later removes only their shared
        names. (A link, not a rename: a file renamed out of a watched folder
        holds up watchdog's event queue for half a second, waiting for a
        matching arrival.) Returns the file stem of each attachment
        (``<stem>.<i:06d>.chunk``), or ``None``, linking nothing, when they
        could not all be linked (shared attachments, another backend, another
        disk): the caller then writes the bytes it has.
        """
        refs = incoming.attachments
        if not refs or any(r.shared is not None for r in refs):
            return None
        dest.mkdir(parents=True, exist_ok=True)
        mid, kind, folder = incoming.id, incoming.head.kind, incoming.path.folder
        keys = [
            [
                f"{folder}/{attachment_chunk_name(mid, kind, k, i)}"
                for i in range(ref.count)
            ]
            for k, ref in enumerate(refs)
        ]
        stems = [f"{mid}.a{k}" for k in range(len(refs))]
        return stems if self._link_chunks(keys, dest, stems) else None

    def read_head_bytes(self, key: str) -> bytes:
        """The bytes of a head file, read under the head size limit.

        Raises
        ------
        MessageNotFound
            No such file.
        UnsafeFileError
            Not a regular file, or larger than any head may be.
        """
        return self.transport.read_limited(key, MAX_HEAD_BYTES)

    def response_for(
        self, recipient: str, endpoint: str, mid: str, *, check_rejected: bool = True
    ) -> Incoming | None:
        """Return the decoded response to request ``mid`` sent to ``recipient``.

        Returns ``None`` while there is no response file yet. With
        ``check_rejected=False`` the (costlier) rejection-marker check is skipped.

        Raises
        ------
        PermissionDenied
            The backend refused to deliver the request (rejection marker).
        IncompleteMessage, EnvelopeError, EncryptionError, UnknownSenderError
            As :meth:`read`.
        """
        key = self.head_key(recipient, endpoint, self.identity, mid, "response")
        try:
            return self.read(key)
        except MessageNotFound:
            req = self.head_key(recipient, endpoint, self.identity, mid, "request")
            if check_rejected and self.transport.is_rejected(req):
                raise PermissionDenied(
                    f"{recipient}'s datasite refused request {mid} (rejected by sync)"
                ) from None
            return None

    def delete_message(
        self, folder: str, mid: str, kind: Kind, *, read: Incoming | None = None
    ) -> None:
        """Delete a head and its chunks (head first, so readers stop at once).

        The chunk files are known without listing the folder when this side
        wrote the message, or when ``read`` is the message as read from it
        (its head names its chunks and attachments); otherwise the folder is
        listed for files named after the message.
        """
        key = f"{folder}/{head_name(mid, kind)}"
        with self._written_lock:
            known = self._written.pop(key, None)
        if known is None and read is not None and read.path.folder == folder:
            known = message_files(read)
        self.transport.delete(key)
        if known is not None:
            if known:
                self.transport.delete_many([f"{folder}/{n}" for n in known])
            return
        prefix = f"{folder}/{mid}.{kind}."
        chunks = [k for k in self.transport.list(folder) if k.startswith(prefix)]
        if chunks:
            self.transport.delete_many(chunks)

    def withdraw(self, recipient: str, endpoint: str, mid: str) -> None:
        """Delete a request this side wrote (a late data owner then skips it)."""
        self.delete_message(
            self.folder(recipient, endpoint, self.identity), mid, "request"
        )

    def finish(
        self,
        recipient: str,
        endpoint: str,
        mid: str,
        *,
        response: Incoming | None = None,
    ) -> None:
        """Delete both sides of a completed exchange that this side may delete.

        ``response`` is the reply as read (its files are then known).
        """
        folder = self.folder(recipient, endpoint, self.identity)
        self.delete_message(folder, mid, "request")
        self.delete_message(folder, mid, "response", read=response)

    # -- watching -----------------------------------------------------------------
    def watch_responses(
        self, recipient: str, endpoint: str, callback: Callable[[str], None]
    ) -> Watch:
        """Call ``callback(message_id)`` when a response file for us may have changed."""
        folder = self.folder(recipient, endpoint, self.identity)

        def on_key(key: str) -> None:
            name = key.rsplit("/", 1)[-1]
            if ".response" in name:
                callback(name.split(".")[0])

        return self.transport.watch(folder, on_key)

    def watch_requests(self, endpoint: str, callback: Callable[[str], None]) -> Watch:
        """Call ``callback(head_key)`` when a request to us (or its chunk) changes."""
        prefix = self.endpoint_prefix(self.identity, endpoint)

        def on_key(key: str) -> None:
            path = RpcPath.parse(key)
            if path is None or ".request" not in path.name:
                return
            mid = path.name.split(".")[0]
            callback(f"{path.folder}/{head_name(mid, 'request')}")

        return self.transport.watch(prefix, on_key)

    def request_keys(self, endpoint: str) -> list[tuple[str, bool]]:
        """Return ``(head key, has a response file)`` for every request to us."""
        keys = self.transport.list(self.endpoint_prefix(self.identity, endpoint))
        present = set(keys)
        return [
            (k, k[: -len(".request")] + ".response" in present)
            for k in keys
            if k.endswith(".request")
        ]

    def pending_request_keys(self, endpoint: str) -> list[str]:
        """Return head keys of requests to us that have no response yet."""
        return [k for k, answered in self.request_keys(endpoint) if not answered]
