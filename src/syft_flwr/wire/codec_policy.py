"""How message bodies are sealed: the codec policy the mailbox asks for each message.

This sits beside the envelope (it only names a :class:`BodyCodec` per message),
so the encryption policy in :mod:`syft_flwr.crypto.policy` implements it without
reaching up into the mailbox that uses it.
"""

from __future__ import annotations

from typing import Protocol

from syft_flwr.errors import EncryptionError
from syft_flwr.wire.envelope import BodyCodec, Head, PlainCodec, SealContext

__all__ = ["CodecPolicy", "PlaintextPolicy"]


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
