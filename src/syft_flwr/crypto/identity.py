"""What the ``syft_flwr keys`` commands do, as public functions.

* :func:`show_keys`: own and peers' fingerprints, in forms easy to read aloud;
* :func:`trust_peer`: accept a peer's (new) identity key after checking it;
* :func:`rotate_prekey`: publish a new signed prekey, keep the old one for a
  grace period, then destroy it (see :mod:`syft_flwr.crypto.prekeys`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from syft_flwr._email import fold_domain
from syft_flwr.client.protocol import SyftFlwrClient
from syft_flwr.config import Settings
from syft_flwr.crypto.cipher import prekey_id
from syft_flwr.crypto.keys import (
    PrivateKeys,
    PublicBundle,
    fingerprint,
    fingerprint_digits,
    fingerprint_matches,
    public_bundle_of,
)
from syft_flwr.crypto.policy import (
    KeyDirectory,
    _server_url_of,
    load_keys,
    load_or_create_keys,
    publish_did,
    save_keys,
)
from syft_flwr.crypto.prekeys import PrekeyRing, RetiredPrekey
from syft_flwr.crypto.store import key_store_for
from syft_flwr.crypto.trust import PinnedPeer, TrustStore
from syft_flwr.errors import ConfigError, EncryptionError, KeyNotFound
from syft_flwr.transports.base import Transport

__all__ = [
    "KeyInfo",
    "Rotation",
    "adopt_legacy_pins",
    "legacy_pins",
    "rotate_prekey",
    "show_keys",
    "trust_peer",
]


@dataclass(frozen=True)
class KeyInfo:
    """One identity as ``syft_flwr keys show`` prints it.

    Attributes
    ----------
    email : str
    role : {"own", "peer"}
    fingerprint : str or None
        Hex fingerprint of the pinned (peers) or own identity key.
    digits : str or None
        The same key as 6 groups of 5 digits, for reading aloud.
    published : str or None
        Fingerprint of the identity key the peer publishes now, when looked up.
    status : str
        ``"own"``, ``"pinned"`` (first use), ``"accepted"`` (by the user),
        ``"changed"`` (published key differs from the pin: refused),
        ``"older"`` (published keys older than the pinned version: refused),
        ``"not pinned"`` or ``"not published"``.
    """

    email: str
    role: str
    fingerprint: str | None
    digits: str | None
    published: str | None
    status: str


def _pin_info(pin: PinnedPeer, published: PublicBundle | None) -> KeyInfo:
    status = "accepted" if pin.accepted else "pinned"
    pub_fp = None if published is None else fingerprint(published)
    if pub_fp is not None and pub_fp != pin.fingerprint:
        status = "changed"
    elif published is not None and published.version < pin.version:
        status = "older"
    return KeyInfo(
        pin.email, "peer", pin.fingerprint, pin.fingerprint_digits, pub_fp, status
    )


def show_keys(
    client: SyftFlwrClient,
    email: str | None = None,
    *,
    transport: Transport | None = None,
    clock: Callable[[], float] = time.time,
) -> list[KeyInfo]:
    """Own fingerprint (creating keys on first use) and the peers' pinned ones.

    Parameters
    ----------
    client : SyftFlwrClient
        Whose keys and pins.
    email : str, optional
        Show only this peer, and also read its currently published DID (so a
        changed key shows as ``"changed"`` with both fingerprints).
    transport : Transport, optional
        Default ``client.make_transport()``.
    clock : callable, optional
        Current POSIX time; retired prekeys past their grace period are destroyed.

    Returns
    -------
    list of KeyInfo
        Own identity first, then peers sorted by email.
    """
    transport = transport or client.make_transport()
    keys = load_or_create_keys(client, transport)
    own = public_bundle_of(keys, client.email)
    out = [
        KeyInfo(
            client.email,
            "own",
            fingerprint(own),
            fingerprint_digits(own),
            fingerprint(own),
            "own",
        )
    ]
    # showing keys also enforces the expiry of retired prekeys
    PrekeyRing(key_store_for(client), clock=clock).purge()
    trust = TrustStore(key_store_for(client), keys)
    if email is None:
        out += [_pin_info(p, None) for _, p in sorted(trust.peers().items())]
        return out
    out.append(_peer_info(fold_domain(email), KeyDirectory(transport, trust), trust))
    return out


def _peer_info(email: str, directory: KeyDirectory, trust: TrustStore) -> KeyInfo:
    """One peer: its pin against what it publishes now, or why there is none."""
    try:
        published: PublicBundle | None = directory.fetch(email)
    except KeyNotFound:
        published = None
    pin = trust.pinned(email)
    if pin is not None:
        return _pin_info(pin, published)
    if published is not None:
        return KeyInfo(
            email,
            "peer",
            None,
            fingerprint_digits(published),
            fingerprint(published),
            "not pinned",
        )
    return KeyInfo(email, "peer", None, None, None, "not published")


def trust_peer(
    client: SyftFlwrClient,
    email: str,
    fingerprint_text: str | None = None,
    *,
    transport: Transport | None = None,
) -> PinnedPeer:
    """Pin the identity key ``email`` publishes now, replacing an older pin.

    Parameters
    ----------
    client : SyftFlwrClient
        Whose pins.
    email : str
        The peer.
    fingerprint_text : str, optional
        The fingerprint the peer read to you (either printed form). If given,
        the published key must match it, else nothing changes.
    transport : Transport, optional
        Default ``client.make_transport()``.

    Returns
    -------
    PinnedPeer

    Raises
    ------
    KeyNotFound
        ``email`` has not published keys (or they have not synced yet).
    ConfigError
        The published key does not match ``fingerprint_text``.
    """
    transport = transport or client.make_transport()
    trust = TrustStore(key_store_for(client), load_or_create_keys(client, transport))
    bundle = KeyDirectory(transport, trust).fetch(email)
    if fingerprint_text is not None and not fingerprint_matches(
        fingerprint_text, bundle
    ):
        raise ConfigError(
            f"{bundle.email} publishes fingerprint {fingerprint(bundle)} "
            f"({fingerprint_digits(bundle)}), not {fingerprint_text!r}; nothing was "
            "changed. Do not trust it until you know why."
        )
    return trust.trust(bundle)


def legacy_pins(client: SyftFlwrClient) -> dict[str, PinnedPeer] | None:
    """The pins of an untagged ``peers.json`` from an older syft_flwr, unchanged.

    Parameters
    ----------
    client : SyftFlwrClient
        Whose pins.

    Returns
    -------
    dict of str to PinnedPeer, or None
        ``None`` when there is no such file (none, or already tagged).
    """
    return TrustStore(key_store_for(client), load_keys(client)).legacy()


def adopt_legacy_pins(client: SyftFlwrClient) -> dict[str, PinnedPeer]:
    """Keep an untagged ``peers.json``'s pins, after the user checked them.

    Parameters
    ----------
    client : SyftFlwrClient
        Whose pins.

    Returns
    -------
    dict of str to PinnedPeer
        The pins now in force.
    """
    return TrustStore(key_store_for(client), load_keys(client)).adopt_legacy()


@dataclass(frozen=True)
class Rotation:
    """What :func:`rotate_prekey` did.

    Attributes
    ----------
    new_prekey : str
        Id of the signed prekey now published.
    retired : RetiredPrekey
        The old one: its id and when it will be destroyed.
    fingerprint : str
        The identity fingerprint, unchanged (peers see no TOFU prompt).
    """

    new_prekey: str
    retired: RetiredPrekey
    fingerprint: str


def rotate_prekey(
    client: SyftFlwrClient,
    *,
    grace: float | None = None,
    transport: Transport | None = None,
    settings: Settings | None = None,
    clock: Callable[[], float] = time.time,
) -> Rotation:
    """Create and publish a new signed prekey; retire the old one for ``grace``.

    Messages sealed to the old prekey keep opening until the grace period ends;
    then it is destroyed, and messages captured before the rotation can no longer
    be opened by anyone, even with all of this party's keys. The identity key (and
    so the fingerprint) stays: peers accept the new prekey without a prompt,
    because the pinned identity key signed it.

    The new prekey gets the next key version (one above both the key file's
    and the published one), which peers pin: an old ``did.json`` put back
    afterwards is refused by them.

    Order of writes: the old prekey goes to the retired store first, then the key
    file gets the new one, then the DID is published. An interruption never loses
    a private prekey; an unpublished DID is republished at the next start.

    Parameters
    ----------
    client : SyftFlwrClient
        Whose prekey.
    grace : float, optional
        Seconds the old prekey is kept. Precedence: this argument, then
        ``settings.prekey_grace``, then ``SYFT_FLWR_PREKEY_GRACE``, then 7 days.
    transport : Transport, optional
        Where the DID is published; default ``client.make_transport()``.
    settings : Settings, optional
        Default ``Settings.from_env()``.
    clock : callable, optional
        Current POSIX time (tests inject one).

    Returns
    -------
    Rotation
    """
    if grace is None:
        grace = (settings or Settings.from_env()).prekey_grace
    transport = transport or client.make_transport()
    keys = load_or_create_keys(client, transport)
    version = _next_version(keys, transport, client.email)
    ring = PrekeyRing(key_store_for(client), clock=clock)
    retired = ring.retire(keys.signed_prekey, grace)
    new = PrivateKeys(keys.identity, X25519PrivateKey.generate(), version)
    save_keys(client, new)
    publish_did(transport, client.email, new, _server_url_of(client))
    return Rotation(
        prekey_id(new.signed_prekey.public_key()), retired, fingerprint(new)
    )


def _next_version(keys: PrivateKeys, transport: Transport, email: str) -> int:
    """One above the key file's version and the one published under our identity.

    The published one counts too: peers pinned it, so a key file restored from
    an older backup must not publish a version they would refuse.
    """
    try:
        published = KeyDirectory(transport).fetch(email)
    except EncryptionError:  # none published (KeyNotFound) or not readable
        return keys.prekey_version + 1
    ours = published.identity_key.public_bytes_raw() == (
        keys.identity.public_key().public_bytes_raw()
    )
    return max(keys.prekey_version, published.version if ours else 0) + 1
