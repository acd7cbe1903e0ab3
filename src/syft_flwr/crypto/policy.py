"""Encryption policy: plugs the cipher into the envelope, for every transport.

With encryption on (the default) every request and response body, and every
chunk, is sealed to its recipient; a plaintext or undecryptable message is
refused with a clear error, never processed as plaintext. Public keys travel
as DID documents under the transport key ``<email>/public/did.json`` (on
SyftBox that is the synced ``public/did.json`` of the datasite).

Peers' keys are found by :mod:`~syft_flwr.crypto.directory`, our own kept by
:mod:`~syft_flwr.crypto.own_keys`; this module seals and opens bodies and keeps
every name it always had.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from syft_flwr._email import fold_domain
from syft_flwr.client.protocol import SyftFlwrClient
from syft_flwr.config import Settings
from syft_flwr.crypto.cipher import (
    ALGORITHM,
    LEGACY_ALGORITHM,
    TAG_SIZE,
    MessageContext,
    SealedKey,
    decrypt_chunk,
    encrypt_chunk,
    open_key,
    prekey_id,
    seal_key,
    sign_transcript,
    transcript,
    transcript_of_digests,
    verify_transcript,
)

# Kept importable from here: these names were always read from this module.
from syft_flwr.crypto.directory import DEFAULT_DID_MAX_AGE as DEFAULT_DID_MAX_AGE
from syft_flwr.crypto.directory import MAX_DID_BYTES as MAX_DID_BYTES
from syft_flwr.crypto.directory import KeyDirectory as KeyDirectory
from syft_flwr.crypto.directory import did_key as did_key
from syft_flwr.crypto.directory import publish_did as publish_did
from syft_flwr.crypto.keys import (
    PrivateKeys,
    PublicBundle,
)
from syft_flwr.crypto.own_keys import CURRENT_PREKEY_TTL as CURRENT_PREKEY_TTL
from syft_flwr.crypto.own_keys import PrekeyLookup as PrekeyLookup
from syft_flwr.crypto.own_keys import _server_url_of as _server_url_of
from syft_flwr.crypto.own_keys import load_keys as load_keys
from syft_flwr.crypto.own_keys import load_or_create_keys as load_or_create_keys
from syft_flwr.crypto.own_keys import own_prekeys as own_prekeys
from syft_flwr.crypto.own_keys import save_keys as save_keys
from syft_flwr.crypto.prekeys import PrekeyRing
from syft_flwr.crypto.store import key_store_for
from syft_flwr.crypto.trust import TrustStore
from syft_flwr.errors import (
    DecryptionError,
    EncryptionError,
    PlaintextRefused,
)
from syft_flwr.transports.base import Transport
from syft_flwr.wire.codec_policy import CodecPolicy, PlaintextPolicy
from syft_flwr.wire.envelope import BodyCodec, Head, SealContext

__all__ = [
    "EncryptionPolicy",
    "KeyDirectory",
    "X3DHCodec",
    "default_policy",
    "did_key",
    "load_keys",
    "load_or_create_keys",
    "own_prekeys",
    "publish_did",
    "save_keys",
]

logger = logging.getLogger("syft_flwr.crypto")


class X3DHCodec(BodyCodec):
    """Seals each stored part with AES-256-GCM under a fresh X3DH message key.

    The encryption header is ``{"alg", "ek", "spk", "sig"}``: the scheme, the
    ephemeral key, the id of the recipient's signed prekey that was used, and the
    sender's identity-key signature over the transcript (header, context and
    ciphertext digest; see :func:`~syft_flwr.crypto.cipher.transcript`).

    Parameters
    ----------
    own : PrivateKeys
        Our identity key and current signed prekey.
    peer : PublicBundle
        The other party's verified, pinned keys.
    prekeys : callable, optional
        Finds our signed prekey named by a header (current or still in its grace
        period); default: only ``own.signed_prekey``.
    """

    algorithm = ALGORITHM
    overhead = TAG_SIZE

    def __init__(
        self,
        own: PrivateKeys,
        peer: PublicBundle,
        prekeys: PrekeyLookup | None = None,
    ) -> None:
        self.own = own
        self.peer = peer
        self.prekeys = prekeys or self._current_prekey_only

    def _current_prekey_only(self, pid: str) -> X25519PrivateKey:
        if pid == prekey_id(self.own.signed_prekey.public_key()):
            return self.own.signed_prekey
        raise DecryptionError(f"signed prekey {pid!r} is not ours (or was destroyed)")

    @staticmethod
    def _mctx(
        ctx: SealContext, count: int, sender_ik: bytes, recipient_ik: bytes
    ) -> MessageContext:
        return MessageContext(
            message_id=ctx.message_id,
            sender=ctx.sender,
            recipient=ctx.recipient,
            app=ctx.app,
            endpoint=ctx.endpoint,
            kind=ctx.kind,
            expires=ctx.expires,
            chunk_count=count,
            sender_identity=sender_ik,
            recipient_identity=recipient_ik,
            head=ctx.head,
        )

    def seal(
        self, ctx: SealContext, parts: Sequence[memoryview]
    ) -> tuple[dict[str, Any] | None, list[bytes]]:
        sealed, key = seal_key(self.own, self.peer)
        own_ik = self.own.identity.public_key().public_bytes_raw()
        mctx = self._mctx(
            ctx, len(parts), own_ik, self.peer.identity_key.public_bytes_raw()
        )
        stored = [encrypt_chunk(key, mctx, i, p) for i, p in enumerate(parts)]
        signature = sign_transcript(self.own.identity, transcript(mctx, sealed, stored))
        header = {
            "alg": ALGORITHM,
            "ek": base64.b64encode(sealed.ephemeral_public).decode("ascii"),
            "spk": sealed.prekey,
            "sig": base64.b64encode(signature).decode("ascii"),
        }
        return header, stored

    def open(
        self,
        ctx: SealContext,
        header: Mapping[str, Any] | None,
        parts: Sequence[bytes],
    ) -> bytes:
        what = f"{ctx.kind} {ctx.message_id} from {ctx.sender}"
        sealed, signature = self._read_header(what, header)
        own_ik = self.own.identity.public_key().public_bytes_raw()
        mctx = self._mctx(
            ctx, len(parts), self.peer.identity_key.public_bytes_raw(), own_ik
        )
        # Signature first: a forgery is refused before any key is touched, and
        # even by someone who holds all of our private keys.
        verify_transcript(self.peer, transcript(mctx, sealed, parts), signature)
        spk = self.prekeys(sealed.prekey)
        key = open_key(PrivateKeys(self.own.identity, spk), self.peer, sealed)
        return b"".join(decrypt_chunk(key, mctx, i, p) for i, p in enumerate(parts))

    def verify_sent(
        self,
        ctx: SealContext,
        header: Mapping[str, Any] | None,
        digests: Sequence[bytes],
    ) -> None:
        """Check that we sealed this message, for ``self.peer``, as it stands.

        The sender cannot open what it sealed (the ephemeral key is gone), but
        it can check its own signature over the head and the stored parts'
        digests: that proves the id, the recipient, the status and every other
        signed field are the ones it wrote.

        Parameters
        ----------
        ctx : SealContext
            Built from the head, with us as the sender.
        header : mapping or None
            The head's encryption header.
        digests : sequence of bytes
            SHA-256 of each stored part, in order (from the head).

        Raises
        ------
        DecryptionError
            Not encrypted, another scheme, or not our signature over it.
        """
        what = f"{ctx.kind} {ctx.message_id} to {ctx.recipient}"
        sealed, signature = self._read_header(what, header)
        own_key = self.own.identity.public_key()
        mctx = self._mctx(
            ctx,
            len(digests),
            own_key.public_bytes_raw(),
            self.peer.identity_key.public_bytes_raw(),
        )
        try:
            own_key.verify(signature, transcript_of_digests(mctx, sealed, digests))
        except InvalidSignature:
            raise DecryptionError(
                f"{what} is not signed by our identity key as it stands: altered, "
                "or sealed for another message"
            ) from None

    def _read_header(
        self, what: str, header: Mapping[str, Any] | None
    ) -> tuple[SealedKey, bytes]:
        """The sealed key and signature of an encryption header (refuses others)."""
        if not header:
            raise PlaintextRefused(f"{what} is not encrypted")
        alg = header.get("alg")
        if alg == LEGACY_ALGORITHM:
            # Reading it would let anyone holding our keys forge messages "from"
            # any peer (the old scheme does not involve the sender's identity key).
            raise DecryptionError(
                f"{what} is sealed with the retired 2-DH scheme {alg!r}, which does "
                "not authenticate the sender's identity key; refused. Upgrade "
                "syft_flwr on the sender's side."
            )
        if alg != ALGORITHM:
            raise DecryptionError(
                f"{what} uses unknown encryption scheme {alg!r} (this syft_flwr "
                f"reads {ALGORITHM!r}); upgrade syft_flwr"
            )
        try:
            sealed = SealedKey(
                base64.b64decode(str(header["ek"]), validate=True), str(header["spk"])
            )
            signature = base64.b64decode(str(header["sig"]), validate=True)
        except (KeyError, binascii.Error, ValueError, EncryptionError) as exc:
            raise DecryptionError(f"bad encryption header of {what}: {exc}") from exc
        return sealed, signature


class EncryptionPolicy:
    """Encrypt everything; refuse plaintext and anything that does not decrypt."""

    required = True

    def __init__(
        self,
        identity: str,
        keys: PrivateKeys,
        directory: KeyDirectory,
        prekeys: PrekeyLookup | None = None,
    ) -> None:
        self.identity = fold_domain(identity)
        self.keys = keys
        self.directory = directory
        #: Finds our signed prekey a message names (current or in its grace
        #: period); default: only ``keys.signed_prekey``.
        self.prekeys = prekeys

    def for_sending(self, ctx: SealContext) -> BodyCodec:
        return X3DHCodec(self.keys, self.directory.get(ctx.recipient), self.prekeys)

    def for_receiving(self, ctx: SealContext, head: Head) -> BodyCodec:
        if not head.encrypted:
            raise PlaintextRefused(
                f"{head.kind} {head.id} from {ctx.sender} is plaintext while encryption "
                "is on; refusing it"
            )
        if ctx.recipient != self.identity:
            raise DecryptionError(
                f"{head.kind} {head.id} is addressed to {ctx.recipient}, not to "
                f"{self.identity}"
            )
        return X3DHCodec(self.keys, self.directory.get(ctx.sender), self.prekeys)

    def vouch_sent(self, ctx: SealContext, head: Head) -> None:
        """Check that ``head`` is a message we sealed, exactly as it stands.

        Parameters
        ----------
        ctx : SealContext
            Built from the head and where it sits, with us as the sender.
        head : Head

        Raises
        ------
        DecryptionError
            Not sealed by our identity key for this id, recipient and head.
        KeyNotFound
            The recipient's public keys are not visible (cannot check).
        """
        if ctx.sender != self.identity:
            raise DecryptionError(f"{head.kind} {head.id} was not sent by us")
        if head.storage == "inline":
            digests = [hashlib.sha256(head.inline_body).digest()]
        else:
            digests = [bytes.fromhex(c.sha256) for c in head.chunks]
        codec = X3DHCodec(self.keys, self.directory.get(ctx.recipient), self.prekeys)
        codec.verify_sent(ctx, head.encryption, digests)


def default_policy(
    client: SyftFlwrClient,
    transport: Transport,
    settings: Settings,
    *,
    clock: Callable[[], float] = time.time,
) -> CodecPolicy:
    """Encryption on (keys created on first use) unless settings turn it off.

    Parameters
    ----------
    client : SyftFlwrClient
        Whose keys and pins.
    transport : Transport
        Where DIDs are published and read.
    settings : Settings
        ``encryption_enabled`` decides.
    clock : callable, optional
        Current POSIX time, for the grace period of rotated prekeys.

    Returns
    -------
    CodecPolicy
    """
    if not settings.encryption_enabled:
        logger.warning(
            "end-to-end encryption is OFF (SYFT_FLWR_ENCRYPTION_ENABLED=false): "
            "model updates are readable by anyone who can read the files"
        )
        return PlaintextPolicy()
    keys = load_or_create_keys(client, transport)
    store = key_store_for(client)
    PrekeyRing(store, clock=clock).purge()  # destroy what expired while we were off
    return EncryptionPolicy(
        client.email,
        keys,
        KeyDirectory(transport, TrustStore(store, keys)),
        own_prekeys(client, clock=clock),
    )
