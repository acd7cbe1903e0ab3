"""Reading messages: parse the head strictly, check who wrote it, open the body.

Also reads attachments (next to the message, or in the sender's shared group,
the last one kept a while) and vouches for replies this side wrote.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from syft_flwr import progress
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
from syft_flwr.transports.base import RpcPath, Transport
from syft_flwr.wire import frames
from syft_flwr.wire.blobs import BlobRef, chunk_file_name, read_blob, unpack_attached
from syft_flwr.wire.codec_policy import CodecPolicy
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
    parse_head,
)
from syft_flwr.wire.layout import Layout, attachment_chunk_name
from syft_flwr.wire.message import Incoming
from syft_flwr.wire.reasons import reason_text

__all__ = ["SHARED_CACHE_SECONDS", "Reader", "check_head_signed"]

#: Seconds a data owner keeps the last shared attachment it read, so several
#: requests naming the same blob read it once.
SHARED_CACHE_SECONDS = 60.0


def check_head_signed(head: Head) -> None:
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


def _is_refusal(head: Head) -> bool:
    return head.kind == "response" and (head.status_code or 200) != 200


class Reader:
    """Reads and checks messages for one app; owns the shared-attachment cache.

    Parameters
    ----------
    transport:
        Reads the files; its ``identity`` is the reader.
    layout:
        Where messages live.
    settings:
        Size limits.
    policy:
        Body codec policy (replaced by the mailbox when its own is).
    """

    def __init__(
        self,
        transport: Transport,
        layout: Layout,
        settings: Settings,
        policy: CodecPolicy,
    ) -> None:
        self.transport = transport
        self.layout = layout
        self.settings = settings
        self.policy = policy
        self._shared_cache: tuple[float, str, BlobRef, bytes] | None = None
        self._shared_lock = threading.Lock()

    # -- one message --------------------------------------------------------------
    def read(
        self, key: str, *, raw_head: bytes | None = None, head: Head | None = None
    ) -> Incoming:
        """Read and decode the head file at ``key`` and its chunks (see ``SyftFlwrRpc.read``)."""
        path = RpcPath.parse(key)
        if path is None or path.app != self.layout.app_name:
            raise MessageNotFound(
                f"{key} is not a message of app {self.layout.app_name}"
            )
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
        self._check_writer(path, head)
        ctx = self.context_of(path, head)
        codec = self._codec_for(ctx, head)
        body = self._open_body(path, head, ctx, codec)
        refs: list[BlobRef] = []
        if head.version >= 2:
            body, refs = self._read_attachments(path, head, body)
        return Incoming(path=path, head=head, body=body, attachments=tuple(refs))

    def _check_writer(self, path: RpcPath, head: Head) -> None:
        """Refuse a head whose sender or id is not the one its place says."""
        # Who may have written this file: the requester writes into its own
        # sub-folder, the folder owner answers next to it.
        kind = head.kind
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

    def _codec_for(self, ctx: SealContext, head: Head) -> BodyCodec:
        """The codec that opens ``head``'s body, or the refusal of a plaintext one."""
        # A refusal (non-200 response) may come in clear when the data owner
        # could not seal it. With encryption on, nothing proves who wrote such a
        # file, so it never counts as the data owner's answer: it is refused
        # with the reason it claims (useful in logs, never trusted).
        refusal = _is_refusal(head)
        if self.policy.required and not head.encrypted:
            if refusal and head.storage == "inline":
                claimed = reason_text(head.inline_body, limit=200)
                raise PlaintextRefused(
                    f"an unauthenticated refusal (status {head.status_code}, not "
                    f"sealed by {head.sender}) says: {claimed!r}"
                )
            raise PlaintextRefused(
                f"{head.kind} {head.id} from {head.sender} is not encrypted, but "
                "encryption is required here (SYFT_FLWR_ENCRYPTION_ENABLED)"
            )
        if self.policy.required:
            check_head_signed(head)
        if refusal and not head.encrypted:
            return PlainCodec()
        return self.policy.for_receiving(ctx, head)

    def _open_body(
        self, path: RpcPath, head: Head, ctx: SealContext, codec: BodyCodec
    ) -> bytes:
        """The plaintext body: inline, or its chunks read and opened."""
        folder = path.folder
        # Each chunk is read up to the size its (validated) manifest gives it.
        limits = {
            chunk_name(head.id, head.kind, i): c.size for i, c in enumerate(head.chunks)
        }
        return decode_body(
            head,
            ctx,
            codec,
            lambda n: self.transport.read_limited(f"{folder}/{n}", limits[n]),
        )

    def context_of(self, path: RpcPath, head: Head) -> SealContext:
        """What a message at ``path`` with ``head`` must have been sealed with."""
        return SealContext(
            message_id=head.id,
            sender=head.sender,
            recipient=path.owner if head.kind == "request" else path.peer,
            app=self.layout.app_name,
            endpoint=path.endpoint,
            kind=head.kind,
            expires=head.expires,
            head=head.signed_fields,
        )

    def read_head_bytes(self, key: str) -> bytes:
        """The bytes of a head file, read under the head size limit."""
        return self.transport.read_limited(key, MAX_HEAD_BYTES)

    def response_for(
        self, recipient: str, endpoint: str, mid: str, *, check_rejected: bool
    ) -> Incoming | None:
        """The decoded reply to request ``mid`` (see ``SyftFlwrRpc.response_for``)."""
        me = self.transport.identity
        key = self.layout.head_key(recipient, endpoint, me, mid, "response")
        try:
            return self.read(key)
        except MessageNotFound:
            req = self.layout.head_key(recipient, endpoint, me, mid, "request")
            if check_rejected and self.transport.is_rejected(req):
                raise PermissionDenied(
                    f"{recipient}'s datasite refused request {mid} (rejected by sync)"
                ) from None
            return None

    def vouch_for_reply(self, key: str) -> bool:
        """Whether the reply at ``key`` is one this side wrote, as it stands.

        See ``SyftFlwrRpc.vouch_for_reply``.
        """
        path = RpcPath.parse(key)
        if path is None or path.app != self.layout.app_name:
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
        if (
            head.sender != self.transport.identity
            or head.id != path.name.rsplit(".", 1)[0]
        ):
            return False
        if not self.policy.required:
            return True
        vouch = getattr(self.policy, "vouch_sent", None)
        if vouch is None or not head.encrypted:
            return False
        try:
            check_head_signed(head)
            vouch(self.context_of(path, head), head)
        except (EncryptionError, SecurityError, EnvelopeError, TransportError):
            return False
        return True

    # -- attachments --------------------------------------------------------------
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
        folder = self.layout.shared_folder(owner, ref.shared)
        data = self._read_blob(
            ref, lambda i: f"{folder}/{chunk_file_name(ref.id, i)}", owner
        )
        with self._shared_lock:
            self._shared_cache = (now, owner, ref, data)
        return data
