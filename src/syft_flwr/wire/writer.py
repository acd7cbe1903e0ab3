"""Writing messages: seal, store chunks and attachments, then the head that commits them.

The writer also deletes messages, and remembers the files it wrote for each
(so deleting them needs no folder listing).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Mapping, Sequence

from syft_flwr import progress
from syft_flwr._email import fold_domain
from syft_flwr.config import Settings
from syft_flwr.transports.base import RpcPath, Transport
from syft_flwr.wire import frames
from syft_flwr.wire.blobs import TAG_SIZE, BlobRef, pack_attached, write_blob
from syft_flwr.wire.codec_policy import CodecPolicy
from syft_flwr.wire.envelope import (
    Kind,
    PlainCodec,
    SealContext,
    encode_message,
    format_time,
    head_name,
)
from syft_flwr.wire.layout import Layout, attachment_chunk_name, message_files
from syft_flwr.wire.message import Incoming, Part, StoredParts

__all__ = ["MAX_REMEMBERED_WRITES", "Writer", "blob_payload"]

#: Messages whose chunk files this side remembers having written (so deleting
#: them needs no folder listing); the oldest are forgotten past this number.
MAX_REMEMBERED_WRITES = 4096


def blob_payload(chunk_size: int, encrypt: bool) -> int:
    """Plaintext bytes per stored blob chunk (a sealed chunk carries its tag)."""
    return chunk_size - (TAG_SIZE if encrypt else 0)


class Writer:
    """Writes and deletes this side's messages; owns the memory of what it wrote.

    Parameters
    ----------
    transport:
        Moves the files; its ``identity`` is the sender.
    layout:
        Where messages live.
    settings:
        Inline limit (the chunk size is ``chunk_size``).
    policy:
        Body codec policy (replaced by the mailbox when its own is).
    clock:
        Returns POSIX time (creation stamps, default expiry of refusals).
    chunk_size:
        Largest stored file, the transport's limit included.
    """

    def __init__(
        self,
        transport: Transport,
        layout: Layout,
        settings: Settings,
        policy: CodecPolicy,
        clock: Callable[[], float],
        chunk_size: int,
    ) -> None:
        self.transport = transport
        self.layout = layout
        self.settings = settings
        self.policy = policy
        self.clock = clock
        self.chunk_size = chunk_size
        # head key -> names of the chunk files written next to it (often none)
        self.written: dict[str, tuple[str, ...]] = {}
        self._written_lock = threading.Lock()

    def send_request(
        self,
        recipient: str,
        endpoint: str,
        body: bytes | memoryview,
        *,
        expires_at: float,
        message_id: str | None,
        headers: Mapping[str, str] | None,
        parts: Sequence[Part] | None,
    ) -> str:
        """Write a request for ``recipient``; return its id (see ``SyftFlwrRpc``)."""
        mid = message_id or str(uuid.uuid4())
        recipient = fold_domain(recipient)
        ctx = SealContext(
            message_id=mid,
            sender=self.transport.identity,
            recipient=recipient,
            app=self.layout.app_name,
            endpoint=endpoint.strip("/"),
            kind="request",
            expires=format_time(expires_at),
        )
        self._write(
            folder=self.layout.folder(recipient, endpoint, self.transport.identity),
            ctx=ctx,
            url=self.layout.url(recipient, endpoint),
            body=body,
            headers=headers,
            parts=parts,
        )
        return mid

    def send_response(
        self,
        request: Incoming | RpcPath,
        *,
        request_id: str | None,
        expires: str | None,
        status_code: int,
        body: bytes | memoryview,
        headers: Mapping[str, str] | None,
        plaintext: bool,
        before_head: Callable[[StoredParts], None] | None,
    ) -> None:
        """Answer a request (see ``SyftFlwrRpc.send_response``)."""
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
            sender=self.transport.identity,
            recipient=path.peer,
            app=self.layout.app_name,
            endpoint=path.endpoint,
            kind="response",
            expires=exp,
        )
        self._write(
            folder=path.folder,
            ctx=ctx,
            url=self.layout.url(path.owner, path.endpoint),
            body=body,
            status_code=status_code,
            headers=headers,
            plaintext=plaintext,
            before_head=before_head,
        )

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
            self.written.pop(head_key, None)
            self.written[head_key] = tuple(files)
            while len(self.written) > MAX_REMEMBERED_WRITES:
                del self.written[next(iter(self.written))]

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
                        chunk_payload=blob_payload(self.chunk_size, encrypt),
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

    def delete_message(
        self, folder: str, mid: str, kind: Kind, *, read: Incoming | None = None
    ) -> None:
        """Delete a head and its chunks (see ``SyftFlwrRpc.delete_message``)."""
        key = f"{folder}/{head_name(mid, kind)}"
        with self._written_lock:
            known = self.written.pop(key, None)
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
