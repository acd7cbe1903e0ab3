"""Encryption policy: plugs the cipher into the envelope, for every transport.

With encryption on (the default) every request and response body, and every
chunk, is sealed to its recipient; a plaintext or undecryptable message is
refused with a clear error, never processed as plaintext. Public keys travel
as DID documents under the transport key ``<email>/public/did.json`` (on
SyftBox that is the synced ``public/did.json`` of the datasite).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import threading
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
from syft_flwr.crypto.keys import (
    PrivateKeys,
    PublicBundle,
    catch_up_version,
    ensure_keys,
    fingerprint,
    generate_keys,
    load_private_keys,
    load_public_bundle,
    make_did_document,
    private_key_path,
    save_private_keys,
)
from syft_flwr.crypto.prekeys import PrekeyRing
from syft_flwr.crypto.store import MemoryKeyStore, key_store_for
from syft_flwr.crypto.trust import TrustStore
from syft_flwr.errors import (
    DecryptionError,
    EncryptionError,
    EnvelopeError,
    IncompleteMessage,
    KeyConflictError,
    KeyNotFound,
    MessageNotFound,
    PlaintextRefused,
)
from syft_flwr.transports.base import Transport
from syft_flwr.wire import strict_json
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


def did_key(email: str) -> str:
    """Transport key of a datasite's public DID document."""
    return f"{fold_domain(email)}/public/did.json"


#: Seconds a peer's DID stays cached before it is read again (picks up rotations).
DEFAULT_DID_MAX_AGE = 300.0
#: Seconds a data owner reuses its current signed prekey without re-reading it.
CURRENT_PREKEY_TTL = 30.0
#: A DID document is a few KB; anything much larger is not one.
MAX_DID_BYTES = 256 * 1024


class KeyDirectory:
    """Finds (and caches) peers' verified public keys through a transport.

    Every document read is checked against the pinned identity keys (trust on
    first use, :class:`~syft_flwr.crypto.trust.TrustStore`).

    Parameters
    ----------
    transport : Transport
        Where DIDs are read.
    trust : TrustStore, optional
        The party's pins; default an in-memory store (pins last as long as this
        object, so a change mid-run is still refused).
    max_age : float, optional
        Seconds a DID is cached before it is read again, so a peer's rotated
        prekey is picked up; default :data:`DEFAULT_DID_MAX_AGE`.
    clock : callable, optional
        Monotonic clock for the cache; default ``time.monotonic``.
    """

    def __init__(
        self,
        transport: Transport,
        trust: TrustStore | None = None,
        *,
        max_age: float = DEFAULT_DID_MAX_AGE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.transport = transport
        self.trust = trust if trust is not None else TrustStore(MemoryKeyStore())
        self.max_age = max_age
        self.clock = clock
        self._cache: dict[str, tuple[float, PublicBundle]] = {}
        self._lock = threading.Lock()

    def get(self, email: str, *, refresh: bool = False) -> PublicBundle:
        """Return ``email``'s verified, pinned public bundle.

        Parameters
        ----------
        email : str
            The peer.
        refresh : bool
            Read the DID again even if a cached copy is fresh.

        Returns
        -------
        PublicBundle

        Raises
        ------
        KeyNotFound
            No DID document is visible for ``email`` (not synced, never published).
        BadSignatureError
            Its signed prekey does not verify.
        PeerKeyChangedError
            Its identity key is not the one pinned on first use.
        """
        email = fold_domain(email)
        with self._lock:
            cached = self._cache.get(email)
            if (
                not refresh
                and cached is not None
                and self.clock() - cached[0] < self.max_age
            ):
                return cached[1]
        bundle = self.fetch(email)
        self.trust.check(bundle)
        with self._lock:
            self._cache[email] = (self.clock(), bundle)
        return bundle

    def fetch(self, email: str) -> PublicBundle:
        """Read and verify ``email``'s DID now, without the pin check or the cache.

        Parameters and errors are those of :meth:`get`, minus
        ``PeerKeyChangedError``.
        """
        email = fold_domain(email)
        try:
            raw = self.transport.read_limited(did_key(email), MAX_DID_BYTES)
        except MessageNotFound:
            raise KeyNotFound(
                f"no public keys (public/did.json) visible for {email}; has it "
                "started syft_flwr with encryption on, and has its datasite synced?"
            ) from None
        except EnvelopeError as exc:  # a link, a FIFO, or far too large
            raise EncryptionError(f"did.json of {email} refused: {exc}") from exc
        try:
            doc = strict_json.loads(raw, max_bytes=MAX_DID_BYTES)
        except IncompleteMessage as exc:
            # Half synced: not there yet, as if missing (callers wait for it).
            raise KeyNotFound(
                f"did.json of {email} is not complete yet: {exc}"
            ) from exc
        except EnvelopeError as exc:
            raise EncryptionError(f"did.json of {email} is not valid: {exc}") from exc
        if not isinstance(doc, dict):
            raise EncryptionError(f"did.json of {email} is not a JSON object")
        return load_public_bundle(doc, email=email)


#: Finds one of our own signed prekeys (private half) by its :func:`prekey_id`.
PrekeyLookup = Callable[[str], X25519PrivateKey]


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


def publish_did(
    transport: Transport, email: str, keys: PrivateKeys, server_url: str
) -> None:
    """Publish the DID document of ``keys`` under ``<email>/public/did.json``.

    Publishing over an existing document of the same identity key (a rotated
    prekey) is allowed; over a document with another identity key, or one that
    cannot be verified, it is refused: that is another device's (or somebody
    else's) identity, and replacing it would lock its owner out.

    Parameters
    ----------
    transport : Transport
        Where to publish.
    email : str
        Owner of the keys.
    keys : PrivateKeys
        The keys to publish.
    server_url : str
        Server whose host appears in the DID id.

    Raises
    ------
    KeyConflictError
        A different identity is already published for ``email``.
    """
    key = did_key(email)
    data = json.dumps(make_did_document(keys, email, server_url), indent=2).encode()
    try:
        current: bytes | None = transport.get(key)
    except MessageNotFound:
        current = None
    if current == data:
        return
    if current is not None:
        _check_same_identity(current, email, keys, key)
    transport.put(key, data)


def _check_same_identity(
    current: bytes, email: str, keys: PrivateKeys, where: str
) -> None:
    try:
        existing = load_public_bundle(
            strict_json.loads(current, max_bytes=MAX_DID_BYTES), email=email
        )
    except (ValueError, EncryptionError) as exc:
        raise KeyConflictError(
            f"{where} exists but cannot be verified ({exc}); nothing was "
            "overwritten. Remove it by hand if it is garbage, then retry."
        ) from exc
    if (
        existing.identity_key.public_bytes_raw()
        != keys.identity.public_key().public_bytes_raw()
    ):
        raise KeyConflictError(
            f"{email} already published other keys at {where} (fingerprint "
            f"{fingerprint(existing)}); these keys have fingerprint "
            f"{fingerprint(keys)}. Copy the private keys from the device that "
            "created the published ones instead of creating new keys; nothing was "
            "overwritten."
        )


_MEMORY_LOCK = threading.RLock()  # load_or_create_keys nests load/save
#: DID id host for identities that are not on a SyftBox server.
_NON_SYFTBOX_SERVER = "https://syftbox.local/"


def _server_url_of(client: SyftFlwrClient) -> str:
    from syft_flwr.client.syft_core_client import SyftCoreClient

    if isinstance(client, SyftCoreClient):
        return client.server_url
    return _NON_SYFTBOX_SERVER


def _memory_vault(client: SyftFlwrClient) -> dict[str, object]:
    # Keyed by identity on the hub (never by id() of the client object, which
    # Python reuses: a new client would have inherited a freed one's keys).
    from syft_flwr.transports.memory import MemoryHub

    hub = getattr(client, "hub", None)
    if not isinstance(hub, MemoryHub):
        raise EncryptionError(
            f"{client!r} has no private state folder to keep its keys in"
        )
    return hub.private_state(client.email)


def load_keys(client: SyftFlwrClient) -> PrivateKeys:
    """Load this client's current private keys; never create them.

    SyftBox clients: syft-crypto's ``pvt.jwks.json`` (see
    :func:`~syft_flwr.crypto.keys.private_key_path`); other clients:
    ``pvt.jwks.json`` in their private state folder, or their hub's private
    state for in-memory clients without one.

    Parameters
    ----------
    client : SyftFlwrClient

    Returns
    -------
    PrivateKeys

    Raises
    ------
    KeyNotFound
        No keys yet (see :func:`load_or_create_keys`).
    KeyFilePermissionError
        The key file is accessible by other users.
    """
    from syft_flwr.client.syft_core_client import SyftCoreClient

    if isinstance(client, SyftCoreClient):
        return load_private_keys(
            private_key_path(client.data_dir, client.server_url, client.email)
        )
    state = client.state_dir("_keys")
    if state is not None:
        return load_private_keys(state / "pvt.jwks.json")
    with _MEMORY_LOCK:
        keys = _memory_vault(client).get("keys")
    if not isinstance(keys, PrivateKeys):
        raise KeyNotFound(f"no private keys for {client.email} yet")
    return keys


def save_keys(client: SyftFlwrClient, keys: PrivateKeys) -> None:
    """Replace this client's current private keys (atomically, mode 0600).

    Parameters
    ----------
    client : SyftFlwrClient
    keys : PrivateKeys
    """
    from syft_flwr.client.syft_core_client import SyftCoreClient

    if isinstance(client, SyftCoreClient):
        path = private_key_path(client.data_dir, client.server_url, client.email)
        save_private_keys(path, keys)
        return
    state = client.state_dir("_keys")
    if state is not None:
        save_private_keys(state / "pvt.jwks.json", keys)
        return
    with _MEMORY_LOCK:
        _memory_vault(client)["keys"] = keys


def load_or_create_keys(client: SyftFlwrClient, transport: Transport) -> PrivateKeys:
    """Return this client's private keys, creating and publishing them on first use.

    SyftBox clients keep keys exactly where syft-crypto 0.1.2 does (so existing
    keys keep working, and a conflict is reported, never overwritten). Other
    clients keep them in their private state folder (mode 0600), or on their
    in-memory hub, per identity. The DID document is then published under
    ``<email>/public/did.json``; a device without keys never creates new ones
    over an identity that already published a DID.

    Parameters
    ----------
    client : SyftFlwrClient
    transport : Transport
        Where the DID is published.

    Returns
    -------
    PrivateKeys

    Raises
    ------
    KeyConflictError
        Another identity key is published for this email, or a DID is published
        but this device has no private keys.
    """
    from syft_flwr.client.syft_core_client import SyftCoreClient

    if isinstance(client, SyftCoreClient):
        return ensure_keys(
            data_dir=client.data_dir,
            datasites_dir=client.datasites,
            server_url=client.server_url,
            email=client.email,
        )
    with _MEMORY_LOCK:
        try:
            keys = load_keys(client)
        except KeyNotFound:
            keys = _new_keys_unless_published(client.email, transport)
            save_keys(client, keys)
        keys = _catch_up_published(client, transport, keys)
    publish_did(transport, client.email, keys, _server_url_of(client))
    return keys


def _catch_up_published(
    client: SyftFlwrClient, transport: Transport, keys: PrivateKeys
) -> PrivateKeys:
    """Move the key version past a higher one our identity published (a restore)."""
    try:
        published = KeyDirectory(transport).fetch(client.email)
    except EncryptionError:  # none yet, or not ours to judge: publish_did decides
        return keys
    if published.identity_key.public_bytes_raw() != (
        keys.identity.public_key().public_bytes_raw()
    ):
        return keys
    caught_up = catch_up_version(keys, published)
    if caught_up is not keys:
        save_keys(client, caught_up)
    return caught_up


def _new_keys_unless_published(email: str, transport: Transport) -> PrivateKeys:
    """Generate keys, unless ``email`` already published a DID (another device)."""
    try:
        transport.get(did_key(email))
    except MessageNotFound:
        return generate_keys()
    raise KeyConflictError(
        f"{email} already published public keys ({did_key(email)}) but this device "
        "has no private keys. Copy the private keys from the device that created "
        "them (or, if they are lost for good, remove the published did.json: peers "
        "must then re-check your fingerprint). Nothing was overwritten."
    )


def own_prekeys(
    client: SyftFlwrClient, *, clock: Callable[[], float] = time.time
) -> PrekeyLookup:
    """A lookup of this client's signed prekeys by id, read fresh at every call.

    The current prekey comes from the key file (so a rotation by another process,
    e.g. ``syft_flwr keys rotate``, is seen at once); a retired one only while its
    grace period lasts (:class:`~syft_flwr.crypto.prekeys.PrekeyRing`).

    Parameters
    ----------
    client : SyftFlwrClient
    clock : callable, optional
        Current POSIX time; default ``time.time``.

    Returns
    -------
    callable
        ``lookup(prekey_id) -> X25519PrivateKey``; raises
        :class:`~syft_flwr.errors.DecryptionError` for an unknown or destroyed
        prekey.
    """
    ring = PrekeyRing(key_store_for(client), clock=clock)
    # The current prekey is kept for CURRENT_PREKEY_TTL s (reading and parsing
    # the key file for every message was a large share of a small round trip);
    # a message naming another prekey always triggers a fresh read.
    cached: dict[str, Any] = {}

    def lookup(pid: str) -> X25519PrivateKey:
        now = clock()
        hit = cached.get("spk")
        fresh = hit is not None and now - cached["at"] < CURRENT_PREKEY_TTL
        if fresh and pid == cached["id"]:
            return hit
        current = load_keys(client).signed_prekey
        cached.update(spk=current, id=prekey_id(current.public_key()), at=now)
        if pid == cached["id"]:
            return current
        retired = ring.find(pid)
        if retired is None:
            raise DecryptionError(
                f"the message is sealed to signed prekey {pid!r}, which "
                f"{client.email} does not have: unknown, or rotated away and "
                "destroyed after its grace period (messages older than that can "
                "no longer be opened, by design)"
            )
        return retired

    return lookup


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
