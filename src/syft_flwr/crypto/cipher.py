"""Per-message end-to-end encryption: X3DH key agreement + chunked AES-256-GCM.

Key agreement is X3DH as Signal specifies it (sender A, recipient B), with the
identity keys of syft-crypto's DID documents. Those are Ed25519 signing keys; for
Diffie-Hellman they are mapped to X25519 with the standard birational map (the
one libsodium's ``crypto_sign_ed25519_*_to_curve25519`` implements)::

    IK_A, IK_B  identity keys (Ed25519; X25519 form for DH)
    SPK_B       B's signed prekey; the sender first verifies IK_B's signature on it
    EK          fresh X25519 key pair, one per message
    DH1  = X25519(IK_A, SPK_B)      authenticates A (only A and B can compute it)
    DH2  = X25519(EK,   IK_B)       authenticates B
    DH3  = X25519(EK,   SPK_B)      forward secrecy once SPK_B is rotated away
    key  = HKDF-SHA256(IKM = 0xFF*32 || DH1 || DH2 || DH3, salt = 0x00*32,
                       info = b"syft_flwr/" + ALGORITHM, L = 32)

There is no DH4: file-sync transports cannot hand out one-time prekeys exactly
once (see ``docs/security.md``). The header names which signed prekey was used
(:func:`prekey_id`), so a recipient can keep a rotated prekey for a grace period
and then destroy it.

The body is split into chunks, each sealed with AES-256-GCM under ``nonce =
index`` (12-byte big-endian) and ``aad = MessageContext.aad(index)``, which binds
every chunk to both identity keys, the message id, both emails, app, endpoint,
kind, expiry, chunk count and its own position. A chunk is ``ciphertext || tag``.

X3DH alone lets anyone who holds B's private keys compute the same key as A
(Signal calls this deniability). So the sender also signs, with IK_A, a
:func:`transcript` of the header and the ciphertext: a message "from" A opens only
if A's identity key signed it, even for someone holding all of B's keys.

Counter nonces are safe only because every key encrypts exactly one message: the
key depends on a fresh ephemeral key. **Never reuse the key returned by**
:func:`seal_key` **for a second message.**

Size: one module over ~400 lines because this is the whole cipher (key conversion, X3DH,
transcript signature, chunk AEAD) and the specification above; a reviewer
audits it in one reading, and nothing else in the package holds a primitive.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
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
    "LEGACY_ALGORITHM",
    "TAG_SIZE",
    "MessageContext",
    "SealedKey",
    "decrypt_chunk",
    "ed25519_private_to_x25519",
    "ed25519_public_to_x25519",
    "encrypt_chunk",
    "open_key",
    "prekey_id",
    "seal_key",
    "sign_transcript",
    "transcript",
    "transcript_of_digests",
    "verify_transcript",
]

#: Name of the scheme; it is the crypto scheme version carried in every header.
ALGORITHM = "x3dh-ed25519-x25519-hkdf-sha256-aes256gcm-v2"
#: The 2-DH scheme of syft_flwr <= 0.x (before issue 12); refused when reading.
LEGACY_ALGORITHM = "x25519-hkdf-sha256-aes256gcm-v1"
TAG_SIZE = 16
KEY_SIZE = 32
_HKDF_INFO = b"syft_flwr/" + ALGORITHM.encode("ascii")
_SIG_DOMAIN = b"syft_flwr/x3dh-transcript/" + ALGORITHM.encode("ascii")
#: Transcripts that bind the message's head fields (envelope version 3) use
#: their own domain, so one can never pass for a transcript without them.
_SIG_DOMAIN_HEAD = b"syft_flwr/x3dh-transcript-head/" + ALGORITHM.encode("ascii")
#: The signed head fields are a small JSON object (a head is at most 8 MiB).
_MAX_HEAD = 8 * 1024 * 1024
_KINDS = ("request", "response")
_MAX_CHUNKS = 2**63  # chunk_count and index are encoded as u64 in the AAD
_P25519 = 2**255 - 19
_D25519 = (-121665 * pow(121666, _P25519 - 2, _P25519)) % _P25519


# --------------------------------------------------------------------------- Ed -> X


def ed25519_public_to_x25519(public: Ed25519PublicKey) -> X25519PublicKey:
    """Map an Ed25519 public key to the X25519 public key of the same secret.

    ``u = (1 + y) / (1 - y) mod p`` where ``y`` is the Edwards y-coordinate. The
    point must decode (have an x); keys inside a :class:`PublicBundle` always do,
    because their prekey signature verified.

    Parameters
    ----------
    public : Ed25519PublicKey

    Returns
    -------
    X25519PublicKey

    Raises
    ------
    EncryptionError
        The key is not a valid Edwards point or maps to a degenerate u.
    """
    return X25519PublicKey.from_public_bytes(_ed_to_x_u(public.public_bytes_raw()))


@functools.lru_cache(maxsize=1024)
def _ed_to_x_u(raw: bytes) -> bytes:
    """The Montgomery u of an Edwards public key (cached: peers' identity keys
    are the same for every message, and the field arithmetic is slow in Python)."""
    y = int.from_bytes(raw, "little") & ((1 << 255) - 1)
    if y >= _P25519 or y == 1:
        raise EncryptionError("identity key is not a usable Ed25519 point")
    # x^2 = (y^2 - 1) / (d y^2 + 1) must be a square for the point to exist.
    y2 = y * y % _P25519
    x2 = (y2 - 1) * pow(_D25519 * y2 + 1, _P25519 - 2, _P25519) % _P25519
    if x2 and pow(x2, (_P25519 - 1) // 2, _P25519) != 1:
        raise EncryptionError("identity key is not on the Ed25519 curve")
    u = (1 + y) * pow(1 - y, _P25519 - 2, _P25519) % _P25519
    return u.to_bytes(32, "little")


def ed25519_private_to_x25519(private: Ed25519PrivateKey) -> X25519PrivateKey:
    """Return the X25519 private key of an Ed25519 key (same secret scalar).

    Ed25519 derives its scalar from ``SHA-512(seed)[:32]`` (clamped); X25519
    clamps the same bytes itself, so both keys share one scalar and
    :func:`ed25519_public_to_x25519` of the public half is its public key.

    Parameters
    ----------
    private : Ed25519PrivateKey

    Returns
    -------
    X25519PrivateKey
    """
    return _ed_seed_to_x25519(private.private_bytes_raw())


@functools.lru_cache(maxsize=16)
def _ed_seed_to_x25519(seed: bytes) -> X25519PrivateKey:
    """Cached: a party's own identity key takes part in every message it seals
    or opens (the result lives in this process's memory, as the key does)."""
    digest = hashlib.sha512(seed).digest()
    return X25519PrivateKey.from_private_bytes(digest[:32])


def prekey_id(public: X25519PublicKey) -> str:
    """Short id of a signed prekey: 16 hex digits of SHA-256 over its raw bytes.

    Parameters
    ----------
    public : X25519PublicKey

    Returns
    -------
    str
    """
    return hashlib.sha256(public.public_bytes_raw()).hexdigest()[:16]


# --------------------------------------------------------------------------- context


@dataclass(frozen=True)
class MessageContext:
    """Everything a message's ciphertext is bound to.

    Both sides must build it from the same values; any difference (a replayed
    chunk under another id, another sender or recipient or identity key, a
    different app or endpoint, a request passed off as a response, an extended
    expiry, a dropped last chunk) makes decryption fail. Strings are compared
    byte-exactly, so normalize emails (domain lower-cased) before building it.

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
    sender_identity : bytes
        Raw 32-byte Ed25519 identity key of the sender.
    recipient_identity : bytes
        Raw 32-byte Ed25519 identity key of the recipient.
    head : bytes
        The envelope's signed head fields
        (:func:`~syft_flwr.wire.envelope.signed_head`: status, creation time, url,
        headers, version, size, ...), or empty for envelopes before version 3.
    """

    message_id: str
    sender: str
    recipient: str
    app: str
    endpoint: str
    kind: str
    expires: str
    chunk_count: int
    sender_identity: bytes
    recipient_identity: bytes
    head: bytes = b""

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
        for name in ("sender_identity", "recipient_identity"):
            value = getattr(self, name)
            if not isinstance(value, bytes) or len(value) != 32:
                raise EncryptionError(f"MessageContext.{name} must be 32 bytes")
        if self.kind not in _KINDS:
            raise EncryptionError(f"MessageContext.kind must be one of {_KINDS}")
        if not isinstance(self.head, bytes) or len(self.head) > _MAX_HEAD:
            raise EncryptionError("MessageContext.head must be at most 8 MiB of bytes")
        if (
            not isinstance(self.chunk_count, int)
            or isinstance(self.chunk_count, bool)
            or not 1 <= self.chunk_count < _MAX_CHUNKS
        ):
            raise EncryptionError("MessageContext.chunk_count must be an int >= 1")

    def _prefix(self) -> bytes:
        parts = [self.sender_identity, self.recipient_identity]
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
        parts.append(struct.pack(">Q", self.chunk_count))
        if self.head:
            parts.append(struct.pack(">I", len(self.head)))
            parts.append(self.head)
        return b"".join(parts)

    def aad(self, index: int) -> bytes:
        """Canonical associated data of chunk ``index``.

        The encoding is unambiguous: the sender's and the recipient's raw 32-byte
        identity keys (Signal's ``AD = IK_A || IK_B``), then the fields
        ``ALGORITHM, message_id, sender, recipient, app, endpoint, kind, expires``
        in this order, each as a 4-byte big-endian length followed by its UTF-8
        bytes, then ``chunk_count`` as an 8-byte big-endian unsigned integer,
        then (when not empty) ``head`` as a 4-byte length and its bytes, then
        ``index`` as an 8-byte big-endian unsigned integer. Because every variable-length field carries its length, no two
        different contexts encode to the same bytes.

        Parameters
        ----------
        index : int
            Chunk position, ``0 <= index < chunk_count``.

        Returns
        -------
        bytes
        """
        _check_index(self, index, EncryptionError)
        return self._prefix() + struct.pack(">Q", index)


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
    prekey : str
        :func:`prekey_id` of the recipient's signed prekey that was used.
    """

    ephemeral_public: bytes
    prekey: str = ""

    def __post_init__(self) -> None:
        # Built from an untrusted header on the receiving side, hence DecryptionError.
        if (
            not isinstance(self.ephemeral_public, bytes)
            or len(self.ephemeral_public) != 32
        ):
            raise DecryptionError("ephemeral public key must be 32 bytes")
        if not isinstance(self.prekey, str) or len(self.prekey) > 64:
            raise DecryptionError("prekey id must be a short string")


def _derive(*dhs: bytes) -> bytes:
    # Signal X3DH: F = 32 0xFF bytes first (domain separation from XEdDSA), a
    # zero salt of hash length.
    return HKDF(
        algorithm=hashes.SHA256(),
        length=KEY_SIZE,
        salt=bytes(KEY_SIZE),
        info=_HKDF_INFO,
    ).derive(b"\xff" * 32 + b"".join(dhs))


def _exchange(private: X25519PrivateKey, public: X25519PublicKey) -> bytes:
    # OpenSSL already refuses an all-zero result (low-order peer point) with
    # ValueError; the explicit check keeps that guarantee independent of the backend.
    shared = private.exchange(public)
    if hmac.compare_digest(shared, bytes(32)):
        raise ValueError("all-zero X25519 output")
    return shared


@functools.lru_cache(maxsize=256)
def _static_dh(private_raw: bytes, public_raw: bytes) -> bytes:
    """DH1 of X3DH: two long-term keys, the same for every message of a pair.

    Cached (it only lives in this process's memory, as the keys do) so each
    message pays for the two ephemeral agreements only.
    """
    return _exchange(
        X25519PrivateKey.from_private_bytes(private_raw),
        X25519PublicKey.from_public_bytes(public_raw),
    )


def _x25519_raw(private: X25519PrivateKey) -> bytes:
    return private.private_bytes_raw()


def seal_key(
    sender_keys: PrivateKeys, recipient: PublicBundle
) -> tuple[SealedKey, bytes]:
    """Create a fresh message key for ``recipient`` (X3DH, DH1-DH3).

    Parameters
    ----------
    sender_keys : PrivateKeys
        The sender's own keys (its identity key takes part in DH1).
    recipient : PublicBundle
        The recipient's verified public keys (prekey signature already checked).

    Returns
    -------
    sealed : SealedKey
        Goes into the envelope header.
    key : bytes
        32-byte AES-256-GCM key for exactly one message.

    Raises
    ------
    EncryptionError
        The recipient's keys are low-order or otherwise unusable (a malicious DID).
    """
    if not isinstance(recipient, PublicBundle):
        raise EncryptionError("recipient must be a verified PublicBundle")
    ephemeral = X25519PrivateKey.generate()
    try:
        ik_b = ed25519_public_to_x25519(recipient.identity_key)
        dh1 = _static_dh(
            _x25519_raw(ed25519_private_to_x25519(sender_keys.identity)),
            recipient.signed_prekey.public_bytes_raw(),
        )
        dh2 = _exchange(ephemeral, ik_b)
        dh3 = _exchange(ephemeral, recipient.signed_prekey)
    except (ValueError, EncryptionError) as exc:
        raise EncryptionError(
            f"cannot agree on a key with {recipient.email}: invalid signed prekey "
            "or identity key"
        ) from exc
    sealed = SealedKey(
        ephemeral.public_key().public_bytes_raw(), prekey_id(recipient.signed_prekey)
    )
    return sealed, _derive(dh1, dh2, dh3)


def open_key(
    recipient_keys: PrivateKeys, sender: PublicBundle, sealed: SealedKey
) -> bytes:
    """Recover the message key on the recipient's side.

    No error here does not mean the sender is genuine: a wrong ``sender`` or a
    forged ``sealed`` yields a different key, and :func:`decrypt_chunk` then fails.

    Parameters
    ----------
    recipient_keys : PrivateKeys
        The recipient's identity key and the signed prekey named by ``sealed``
        (the current one, or a rotated one still inside its grace period).
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
        identity key is unusable.
    """
    if not isinstance(sender, PublicBundle):
        raise DecryptionError("sender must be a verified PublicBundle")
    ek = sealed.ephemeral_public
    # Honest keys are always canonical (u < p, top bit clear). Refusing the other
    # encodings of the same point makes the header field non-malleable.
    if ek[31] & 0x80 or int.from_bytes(ek, "little") >= _P25519:
        raise DecryptionError("non-canonical ephemeral public key")
    try:
        ek_pub = X25519PublicKey.from_public_bytes(ek)
        dh1 = _static_dh(
            _x25519_raw(recipient_keys.signed_prekey),
            _ed_to_x_u(sender.identity_key.public_bytes_raw()),
        )
        dh2 = _exchange(ed25519_private_to_x25519(recipient_keys.identity), ek_pub)
        dh3 = _exchange(recipient_keys.signed_prekey, ek_pub)
    except (ValueError, EncryptionError) as exc:
        raise DecryptionError(
            f"invalid key agreement with {sender.email}: low-order or unusable key"
        ) from exc
    return _derive(dh1, dh2, dh3)


# --------------------------------------------------------------------------- transcript


def transcript(ctx: MessageContext, sealed: SealedKey, parts: Iterable[bytes]) -> bytes:
    """What the sender's identity key signs: header, context and ciphertext digest.

    ``domain || ctx (as in the AAD, without index) || len(prekey) || prekey ||
    ephemeral key || SHA-256 over (SHA-256 of each stored part)``. The domain
    is ``"syft_flwr/x3dh-transcript-head/" + alg`` when ``ctx.head`` is set
    (envelope version 3), else ``"syft_flwr/x3dh-transcript/" + alg``.

    Parameters
    ----------
    ctx : MessageContext
    sealed : SealedKey
    parts : iterable of bytes
        The stored (encrypted) parts, in order.

    Returns
    -------
    bytes
    """
    return transcript_of_digests(
        ctx, sealed, (hashlib.sha256(p).digest() for p in parts)
    )


def transcript_of_digests(
    ctx: MessageContext, sealed: SealedKey, digests: Iterable[bytes]
) -> bytes:
    """:func:`transcript`, from the SHA-256 of each stored part instead of the parts.

    A head lists those digests, so a sender can check its own signature on a
    message it wrote without reading (or being able to open) its chunks.

    Parameters
    ----------
    ctx : MessageContext
    sealed : SealedKey
    digests : iterable of bytes
        The 32-byte SHA-256 of each stored part, in order.

    Returns
    -------
    bytes
    """
    outer = hashlib.sha256()
    for digest in digests:
        outer.update(digest)
    pk = sealed.prekey.encode("utf-8")
    return b"".join(
        (
            _SIG_DOMAIN_HEAD if ctx.head else _SIG_DOMAIN,
            ctx._prefix(),
            struct.pack(">I", len(pk)),
            pk,
            sealed.ephemeral_public,
            outer.digest(),
        )
    )


def sign_transcript(identity: Ed25519PrivateKey, data: bytes) -> bytes:
    """Sign a :func:`transcript` with the sender's identity key (64 bytes).

    Parameters
    ----------
    identity : Ed25519PrivateKey
    data : bytes

    Returns
    -------
    bytes
    """
    return identity.sign(data)


def verify_transcript(sender: PublicBundle, data: bytes, signature: bytes) -> None:
    """Check that ``sender``'s identity key signed ``data``.

    Parameters
    ----------
    sender : PublicBundle
    data : bytes
    signature : bytes

    Raises
    ------
    DecryptionError
        The signature is missing, malformed or does not verify.
    """
    if not isinstance(signature, bytes) or len(signature) != 64:
        raise DecryptionError(f"message signature of {sender.email} is malformed")
    try:
        sender.identity_key.verify(signature, data)
    except InvalidSignature:
        raise DecryptionError(
            f"message is not signed by the identity key of {sender.email}: forged "
            "or altered"
        ) from None


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
