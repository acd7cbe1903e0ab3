"""Per-message end-to-end encryption: 2-DH key agreement + chunked AES-256-GCM.

Key agreement is syft-crypto's static/ephemeral 2-DH scheme (sender A, recipient B)::

    EK   = fresh X25519 key pair, one per message
    DH1  = X25519(SPK_A, SPK_B)     static-static: authenticates A to B
    DH2  = X25519(EK,    SPK_B)     ephemeral-static: a fresh key per message
    key  = HKDF-SHA256(DH1 || DH2, salt=None, info=b"syft_flwr/" + ALGORITHM, L=32)

Unlike syft-crypto the body is split into chunks, each sealed with AES-256-GCM under
``nonce = index`` (12-byte big-endian) and ``aad = MessageContext.aad(index)``, which
binds every chunk to the message id, both parties, app, endpoint, kind, expiry,
chunk count and its own position. A chunk is ``ciphertext || 16-byte tag``.

Counter nonces are safe only because every key encrypts exactly one message: the
key depends on a fresh ephemeral key. **Never reuse the key returned by**
:func:`seal_key` **for a second message.**
"""

from __future__ import annotations

import hmac
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import (
    X25519PrivateKey,
    X25519PublicKey,
)
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from syft_flwr.crypto.keys import PrivateKeys, PublicBundle
from syft_flwr.errors import DecryptionError, EncryptionError

__all__ = [
    "ALGORITHM",
    "TAG_SIZE",
    "MessageContext",
    "SealedKey",
    "decrypt_chunk",
    "encrypt_chunk",
    "open_key",
    "seal_key",
]

ALGORITHM = "x25519-hkdf-sha256-aes256gcm-v1"
TAG_SIZE = 16
KEY_SIZE = 32
_HKDF_INFO = b"syft_flwr/" + ALGORITHM.encode("ascii")
_KINDS = ("request", "response")
_MAX_CHUNKS = 2**63  # chunk_count and index are encoded as u64 in the AAD
_P25519 = 2**255 - 19


# --------------------------------------------------------------------------- context


@dataclass(frozen=True)
class MessageContext:
    """Everything a message's ciphertext is bound to.

    Both sides must build it from the same values; any difference (a replayed
    chunk under another id, another sender or recipient, a different app or
    endpoint, a request passed off as a response, an extended expiry, a dropped
    last chunk) makes decryption fail. Strings are compared byte-exactly, so
    normalize emails (lower-case) before building the context.

    Attributes
    ----------
    message_id : str
    sender : str
        Sender's email.
    recipient : str
        Recipient's email.
    app : str
    endpoint : str
    kind : {"request", "response"}
    expires : str
        Expiry timestamp exactly as carried in the envelope.
    chunk_count : int
        Number of chunks of the message, at least 1 (an empty body is one empty
        chunk).
    """

    message_id: str
    sender: str
    recipient: str
    app: str
    endpoint: str
    kind: str
    expires: str
    chunk_count: int

    def __post_init__(self) -> None:
        for name in ("message_id", "sender", "recipient", "app", "endpoint", "expires"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise EncryptionError(f"MessageContext.{name} must be a str")
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise EncryptionError(
                    f"MessageContext.{name} is not valid text"
                ) from exc
        if self.kind not in _KINDS:
            raise EncryptionError(f"MessageContext.kind must be one of {_KINDS}")
        if (
            not isinstance(self.chunk_count, int)
            or isinstance(self.chunk_count, bool)
            or not 1 <= self.chunk_count < _MAX_CHUNKS
        ):
            raise EncryptionError("MessageContext.chunk_count must be an int >= 1")

    def aad(self, index: int) -> bytes:
        """Canonical associated data of chunk ``index``.

        The encoding is unambiguous: the fields ``ALGORITHM, message_id, sender,
        recipient, app, endpoint, kind, expires`` in this fixed order, each as a
        4-byte big-endian length followed by its UTF-8 bytes, then ``chunk_count``
        and ``index`` as 8-byte big-endian unsigned integers. Because every
        variable-length field carries its length, no two different contexts
        (e.g. ``app="ab", endpoint="c"`` vs ``app="a", endpoint="bc"``) encode to
        the same bytes.

        Parameters
        ----------
        index : int
            Chunk position, ``0 <= index < chunk_count``.

        Returns
        -------
        bytes
        """
        _check_index(self, index, EncryptionError)
        parts = []
        for text in (
            ALGORITHM,
            self.message_id,
            self.sender,
            self.recipient,
            self.app,
            self.endpoint,
            self.kind,
            self.expires,
        ):
            raw = text.encode("utf-8")
            parts.append(struct.pack(">I", len(raw)))
            parts.append(raw)
        parts.append(struct.pack(">QQ", self.chunk_count, index))
        return b"".join(parts)


def _check_index(ctx: MessageContext, index: int, error: type[EncryptionError]) -> None:
    if not isinstance(index, int) or isinstance(index, bool):
        raise error("chunk index must be an int")
    if not 0 <= index < ctx.chunk_count:
        raise error(
            f"chunk index {index} out of range for message {ctx.message_id!r} "
            f"with {ctx.chunk_count} chunk(s)"
        )


# --------------------------------------------------------------------------- keys


@dataclass(frozen=True)
class SealedKey:
    """The public part of a message key, carried in the envelope header.

    Attributes
    ----------
    ephemeral_public : bytes
        Raw 32-byte X25519 public key of the message's ephemeral key.
    """

    ephemeral_public: bytes

    def __post_init__(self) -> None:
        # Built from an untrusted header on the receiving side, hence DecryptionError.
        if (
            not isinstance(self.ephemeral_public, bytes)
            or len(self.ephemeral_public) != 32
        ):
            raise DecryptionError("ephemeral public key must be 32 bytes")


def _derive(dh1: bytes, dh2: bytes) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=KEY_SIZE, salt=None, info=_HKDF_INFO
    ).derive(dh1 + dh2)


def _exchange(private: X25519PrivateKey, public: X25519PublicKey) -> bytes:
    # OpenSSL already refuses an all-zero result (low-order peer point) with
    # ValueError; the explicit check keeps that guarantee independent of the backend.
    shared = private.exchange(public)
    if hmac.compare_digest(shared, bytes(32)):
        raise ValueError("all-zero X25519 output")
    return shared


def seal_key(
    sender_keys: PrivateKeys, recipient: PublicBundle
) -> tuple[SealedKey, bytes]:
    """Create a fresh message key for ``recipient``.

    Parameters
    ----------
    sender_keys : PrivateKeys
        The sender's own keys (their prekey authenticates the message).
    recipient : PublicBundle
        The recipient's verified public keys.

    Returns
    -------
    sealed : SealedKey
        Goes into the envelope header.
    key : bytes
        32-byte AES-256-GCM key for exactly one message.

    Raises
    ------
    EncryptionError
        The recipient's prekey is a low-order point (a malicious DID).
    """
    if not isinstance(recipient, PublicBundle):
        raise EncryptionError("recipient must be a verified PublicBundle")
    ephemeral = X25519PrivateKey.generate()
    try:
        dh1 = _exchange(sender_keys.signed_prekey, recipient.signed_prekey)
        dh2 = _exchange(ephemeral, recipient.signed_prekey)
    except ValueError as exc:
        raise EncryptionError(
            f"cannot agree on a key with {recipient.email}: invalid signed prekey"
        ) from exc
    sealed = SealedKey(ephemeral.public_key().public_bytes_raw())
    return sealed, _derive(dh1, dh2)


def open_key(
    recipient_keys: PrivateKeys, sender: PublicBundle, sealed: SealedKey
) -> bytes:
    """Recover the message key on the recipient's side.

    No error here does not mean the sender is genuine: a wrong ``sender`` or a
    forged ``sealed`` yields a different key, and :func:`decrypt_chunk` then fails.

    Parameters
    ----------
    recipient_keys : PrivateKeys
        The recipient's own keys.
    sender : PublicBundle
        The claimed sender's verified public keys.
    sealed : SealedKey
        From the envelope header.

    Returns
    -------
    bytes
        The 32-byte message key.

    Raises
    ------
    DecryptionError
        The ephemeral key is non-canonical or a low-order point, or the sender's
        prekey is a low-order point.
    """
    if not isinstance(sender, PublicBundle):
        raise DecryptionError("sender must be a verified PublicBundle")
    ek = sealed.ephemeral_public
    # Honest keys are always canonical (u < p, top bit clear). Refusing the other
    # encodings of the same point makes the header field non-malleable.
    if ek[31] & 0x80 or int.from_bytes(ek, "little") >= _P25519:
        raise DecryptionError("non-canonical ephemeral public key")
    try:
        dh1 = _exchange(recipient_keys.signed_prekey, sender.signed_prekey)
        dh2 = _exchange(
            recipient_keys.signed_prekey, X25519PublicKey.from_public_bytes(ek)
        )
    except ValueError as exc:
        raise DecryptionError(
            f"invalid key agreement with {sender.email}: low-order public key"
        ) from exc
    return _derive(dh1, dh2)


# --------------------------------------------------------------------------- chunks


def _aead(key: bytes, error: type[EncryptionError]) -> AESGCM:
    if not isinstance(key, bytes | bytearray) or len(key) != KEY_SIZE:
        raise error(f"message key must be {KEY_SIZE} bytes")
    return AESGCM(bytes(key))


def _nonce(index: int) -> bytes:
    return index.to_bytes(12, "big")


def encrypt_chunk(
    key: bytes, ctx: MessageContext, index: int, plaintext: bytes | memoryview
) -> bytes:
    """Encrypt chunk ``index`` of a message.

    Parameters
    ----------
    key : bytes
        From :func:`seal_key`; one key per message.
    ctx : MessageContext
        The message the chunk belongs to.
    index : int
        ``0 <= index < ctx.chunk_count``; each index must be used once.
    plaintext : bytes or memoryview
        The chunk (may be empty; at most 2**31 - 1 bytes).

    Returns
    -------
    bytes
        ``ciphertext || tag``, ``len(plaintext) + 16`` bytes.

    Raises
    ------
    EncryptionError
        Bad key, index or plaintext.
    """
    aead = _aead(key, EncryptionError)
    _check_index(ctx, index, EncryptionError)
    try:
        return aead.encrypt(_nonce(index), plaintext, ctx.aad(index))
    except (OverflowError, TypeError, ValueError) as exc:
        raise EncryptionError(f"cannot encrypt chunk {index}: {exc}") from exc


def decrypt_chunk(
    key: bytes, ctx: MessageContext, index: int, data: bytes | memoryview
) -> bytes:
    """Decrypt and authenticate chunk ``index`` of a message.

    Parameters
    ----------
    key : bytes
        From :func:`open_key`.
    ctx : MessageContext
        Built by the recipient from the envelope and its own identity.
    index : int
        Position the chunk is expected at.
    data : bytes or memoryview
        ``ciphertext || tag``.

    Returns
    -------
    bytes
        The plaintext.

    Raises
    ------
    DecryptionError
        On any failure (tampered, truncated, reordered, duplicated, misaddressed,
        wrong key); the message names the chunk. Never ``InvalidTag``.
    """
    aead = _aead(key, DecryptionError)
    _check_index(ctx, index, DecryptionError)
    where = f"chunk {index} of {ctx.chunk_count} of message {ctx.message_id!r}"
    if len(data) < TAG_SIZE:
        raise DecryptionError(f"{where} is truncated ({len(data)} bytes)")
    try:
        return aead.decrypt(_nonce(index), data, ctx.aad(index))
    except InvalidTag:
        # Deliberately uninformative: GCM cannot tell which field was wrong.
        raise DecryptionError(
            f"{where} failed authentication (tampered, truncated, reordered, "
            "misaddressed or wrong key)"
        ) from None
    except (OverflowError, TypeError, ValueError) as exc:
        raise DecryptionError(f"{where} cannot be decrypted: {exc}") from exc
