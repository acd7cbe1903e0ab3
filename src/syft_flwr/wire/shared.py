"""Shared attachment groups: one blob stored once for several recipients.

The sender owns its groups: it creates them (readable by the recipients it
names), stores blobs in them, deletes them, and sweeps away those whose
requests have expired. Reading a shared blob is the reader's
(:mod:`syft_flwr.wire.reader`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable

from syft_flwr import progress
from syft_flwr._email import fold_domain
from syft_flwr.transports.base import Transport
from syft_flwr.wire.blobs import BlobRef, chunk_file_name, write_blob
from syft_flwr.wire.codec_policy import CodecPolicy
from syft_flwr.wire.layout import Layout
from syft_flwr.wire.writer import blob_payload

__all__ = ["SharedGroups"]


class SharedGroups:
    """This side's shared blob folders for one app.

    Parameters
    ----------
    transport:
        Moves the files and grants read access; its ``identity`` owns the groups.
    layout:
        Where the groups live.
    policy:
        Whether blobs are sealed (replaced by the mailbox when its own is).
    clock:
        Returns POSIX time (expiry of groups).
    chunk_size:
        Largest stored file, the transport's limit included.
    """

    def __init__(
        self,
        transport: Transport,
        layout: Layout,
        policy: CodecPolicy,
        clock: Callable[[], float],
        chunk_size: int,
    ) -> None:
        self.transport = transport
        self.layout = layout
        self.policy = policy
        self.clock = clock
        self.chunk_size = chunk_size

    def new_group(self, readers: Iterable[str], expires_at: float) -> str:
        """Create a group readable by ``readers``; return its name (carries the expiry)."""
        group = f"g{int(expires_at)}-{uuid.uuid4().hex[:16]}"
        self.transport.share(
            self.layout.shared_folder(self.transport.identity, group),
            sorted({fold_domain(r) for r in readers}),
        )
        return group

    def put(self, group: str, data: bytes | memoryview) -> BlobRef:
        """Store ``data`` once in ``group``; return its reference."""
        folder = self.layout.shared_folder(self.transport.identity, group)
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
                chunk_payload=blob_payload(self.chunk_size, encrypt),
                encrypt=encrypt,
                shared=group,
            )

    def delete(self, group: str) -> None:
        """Delete ``group`` (its chunks, then its permission files, then the folder)."""
        folder = self.layout.shared_folder(self.transport.identity, group)
        keys = self.transport.list(folder)
        chunks = [k for k in keys if k.endswith(".chunk")]
        self.transport.delete_many(chunks)
        self.transport.delete_many([k for k in keys if not k.endswith(".chunk")])
        self.transport.unshare(folder)  # the folder itself: nothing left behind

    def sweep(self, now: float | None = None) -> int:
        """Delete the groups whose requests have expired; return how many."""
        now = self.clock() if now is None else now
        base = self.layout.shared_base(self.transport.identity)
        groups: set[str] = set()
        # Folders, not files: one left empty by a crash before its first
        # upload is found too.
        for key in self.transport.shared_folders(base):
            group = key[len(base) + 1 :]
            stamp = group[1:].split("-", 1)[0]
            if group.startswith("g") and stamp.isdigit() and int(stamp) < now:
                groups.add(group)
        for group in groups:
            self.delete(group)
        return len(groups)
