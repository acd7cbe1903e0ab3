"""This party's own keys: where they are kept for each kind of client, created once.

SyftBox clients keep them where syft-crypto 0.1.2 does; other clients in their
private state folder (mode 0600), or on their in-memory hub, per identity. The
current signed prekey is looked up fresh (a rotation by another process is seen
at once); retired ones only during their grace period.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from syft_flwr.client.protocol import SyftFlwrClient
from syft_flwr.crypto.cipher import (
    prekey_id,
)
from syft_flwr.crypto.directory import KeyDirectory, did_key, publish_did
from syft_flwr.crypto.keys import (
    PrivateKeys,
    catch_up_version,
    ensure_keys,
    generate_keys,
    load_private_keys,
    private_key_path,
    save_private_keys,
)
from syft_flwr.crypto.prekeys import PrekeyRing
from syft_flwr.crypto.store import key_store_for
from syft_flwr.errors import (
    DecryptionError,
    EncryptionError,
    KeyConflictError,
    KeyNotFound,
    MessageNotFound,
)
from syft_flwr.transports.base import Transport

__all__ = [
    "PrekeyLookup",
    "load_keys",
    "load_or_create_keys",
    "own_prekeys",
    "save_keys",
]

#: Seconds a data owner reuses its current signed prekey without re-reading it.
CURRENT_PREKEY_TTL = 30.0

#: Finds one of our own signed prekeys (private half) by its :func:`prekey_id`.
PrekeyLookup = Callable[[str], X25519PrivateKey]


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
        hit: X25519PrivateKey | None = cached.get("spk")
        fresh = now - cached.get("at", now) < CURRENT_PREKEY_TTL
        if hit is not None and fresh and pid == cached["id"]:
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
