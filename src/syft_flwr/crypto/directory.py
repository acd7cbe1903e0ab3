"""Peers' public keys on a transport: DID documents published, read, verified, pinned.

A DID travels under the transport key ``<email>/public/did.json`` (on SyftBox the
synced ``public/did.json`` of the datasite). Reading one goes through the strict
JSON reader and the signature checks of :class:`~syft_flwr.crypto.did.PublicBundle`,
then the pin of its identity key (:class:`~syft_flwr.crypto.trust.TrustStore`).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

from syft_flwr._email import fold_domain
from syft_flwr.crypto.keys import (
    PrivateKeys,
    PublicBundle,
    fingerprint,
    load_public_bundle,
    make_did_document,
)
from syft_flwr.crypto.store import MemoryKeyStore
from syft_flwr.crypto.trust import TrustStore
from syft_flwr.errors import (
    EncryptionError,
    EnvelopeError,
    IncompleteMessage,
    KeyConflictError,
    KeyNotFound,
    MessageNotFound,
)
from syft_flwr.transports.base import Transport
from syft_flwr.wire import strict_json

__all__ = ["KeyDirectory", "did_key", "publish_did"]


def did_key(email: str) -> str:
    """Transport key of a datasite's public DID document."""
    return f"{fold_domain(email)}/public/did.json"


#: Seconds a peer's DID stays cached before it is read again (picks up rotations).
DEFAULT_DID_MAX_AGE = 300.0
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
