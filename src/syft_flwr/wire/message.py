"""A message as the mailbox hands it over: read (:class:`Incoming`) or stored (:class:`StoredParts`)."""

from __future__ import annotations

from dataclasses import dataclass

from syft_flwr.transports.base import RpcPath
from syft_flwr.wire import frames
from syft_flwr.wire.blobs import BlobRef
from syft_flwr.wire.envelope import Head

__all__ = ["Incoming", "Part", "StoredParts"]

#: A large part of a message: bytes to store next to it, or a blob already stored
#: in the sender's shared folder (:meth:`SyftFlwrRpc.put_shared`).
Part = bytes | memoryview | BlobRef


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
