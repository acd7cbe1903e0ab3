"""Trust on first use: pin each peer's identity key the first time it is seen.

A peer's DID document travels through storage others control (a SyftBox server,
a Drive folder). The first identity key seen for a peer is pinned in the party's
private state (``peers.json``, written atomically, mode 0600); a later DID with a
*different identity key* is refused with :class:`~syft_flwr.errors.PeerKeyChangedError`
naming both fingerprints, until the user compares the new fingerprint out of band
and accepts it (:meth:`TrustStore.trust`, ``syft_flwr keys trust EMAIL``). A new
*signed prekey* under the same identity key (a rotation) needs no prompt: its
signature by the pinned identity key is what authenticates it.
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from syft_flwr._email import fold_domain
from syft_flwr.crypto.keys import PublicBundle, fingerprint, fingerprint_digits
from syft_flwr.crypto.store import KeyStore
from syft_flwr.errors import EncryptionError, PeerKeyChangedError

__all__ = ["PinnedPeer", "TrustStore"]

logger = logging.getLogger("syft_flwr.crypto")

PEERS_FILE = "peers.json"
_FORMAT = 1


@dataclass(frozen=True)
class PinnedPeer:
    """A peer's pinned identity key.

    Attributes
    ----------
    email : str
    identity_key : bytes
        Raw 32-byte Ed25519 public key.
    pinned_at : float
        POSIX time it was pinned (first seen, or accepted by the user).
    accepted : bool
        ``True`` if the user accepted it explicitly (``keys trust``), ``False`` if
        it was pinned automatically on first use.
    """

    email: str
    identity_key: bytes
    pinned_at: float
    accepted: bool = False

    @property
    def fingerprint(self) -> str:
        """Hex fingerprint (see :func:`syft_flwr.crypto.keys.fingerprint`)."""
        return fingerprint(Ed25519PublicKey.from_public_bytes(self.identity_key))

    @property
    def fingerprint_digits(self) -> str:
        """Digit groups for reading aloud (see :func:`~syft_flwr.crypto.keys.fingerprint_digits`)."""
        return fingerprint_digits(Ed25519PublicKey.from_public_bytes(self.identity_key))


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TrustStore:
    """The pinned identity keys of one party's peers.

    Parameters
    ----------
    store : KeyStore
        The party's private key store (see :func:`~syft_flwr.crypto.store.key_store_for`).
    clock : callable, optional
        Returns the current POSIX time (for ``pinned_at``); default ``time.time``.

    Examples
    --------
    >>> from syft_flwr.crypto.store import MemoryKeyStore
    >>> trust = TrustStore(MemoryKeyStore())
    >>> trust.peers()
    {}
    """

    def __init__(
        self, store: KeyStore, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.clock = clock

    def _load(self) -> dict[str, PinnedPeer]:
        doc = self.store.read_json(PEERS_FILE)
        if doc is None:
            return {}
        try:
            return {
                email: PinnedPeer(
                    email=email,
                    identity_key=_unb64(entry["identity_key"]),
                    pinned_at=float(entry["pinned_at"]),
                    accepted=bool(entry.get("accepted", False)),
                )
                for email, entry in doc["peers"].items()
            }
        except (KeyError, TypeError, ValueError, AttributeError, binascii.Error) as exc:
            # Never fall back to "no pins": that would silently re-trust everyone.
            raise EncryptionError(f"pinned peer keys are unreadable: {exc}") from exc

    def _save(self, peers: dict[str, PinnedPeer]) -> None:
        self.store.write_json(
            PEERS_FILE,
            {
                "format": _FORMAT,
                "peers": {
                    p.email: {
                        "identity_key": _b64(p.identity_key),
                        "fingerprint": p.fingerprint,
                        "pinned_at": p.pinned_at,
                        "accepted": p.accepted,
                    }
                    for p in sorted(peers.values(), key=lambda p: p.email)
                },
            },
        )

    def peers(self) -> dict[str, PinnedPeer]:
        """Every pinned peer, by email.

        Returns
        -------
        dict of str to PinnedPeer
        """
        with self.store.lock:
            return self._load()

    def pinned(self, email: str) -> PinnedPeer | None:
        """The pin of ``email``, or ``None`` if it was never seen.

        Parameters
        ----------
        email : str

        Returns
        -------
        PinnedPeer or None
        """
        return self.peers().get(fold_domain(email))

    def check(self, bundle: PublicBundle) -> None:
        """Accept ``bundle`` if its identity key is the pinned one; pin it if new.

        Parameters
        ----------
        bundle : PublicBundle
            A peer's verified public keys, as just read from its DID.

        Raises
        ------
        PeerKeyChangedError
            The peer's identity key is not the pinned one. Both fingerprints and
            the command that accepts the new key are in the message.
        """
        email = fold_domain(bundle.email)
        raw = bundle.identity_key.public_bytes_raw()
        with self.store.lock:
            peers = self._load()
            pin = peers.get(email)
            if pin is None:
                peers[email] = PinnedPeer(email, raw, self.clock())
                self._save(peers)
                logger.info(
                    "pinned the identity key of %s on first use: %s (compare it "
                    "with them: `syft_flwr keys show %s`)",
                    email,
                    fingerprint(bundle),
                    email,
                )
                return
        if pin.identity_key != raw:
            new = fingerprint(bundle)
            when = time.strftime("%Y-%m-%d", time.gmtime(pin.pinned_at))
            raise PeerKeyChangedError(
                f"the identity key of {email} changed: pinned fingerprint "
                f"{pin.fingerprint} (since {when}), published now {new}. This "
                "happens when they reinstall or move to a new device, and when "
                "someone replaced their did.json. Nothing is sent to or accepted "
                f"from {email} until you compare the new fingerprint with them over "
                "a channel you trust (call, in person) and accept it: "
                f"syft_flwr keys trust {email} --fingerprint '{new}'",
                email=email,
                pinned=pin.fingerprint,
                published=new,
            )

    def trust(self, bundle: PublicBundle) -> PinnedPeer:
        """Pin ``bundle``'s identity key for its email, replacing any older pin.

        Parameters
        ----------
        bundle : PublicBundle
            The peer's keys, whose fingerprint the user has checked.

        Returns
        -------
        PinnedPeer
            The new pin.
        """
        email = fold_domain(bundle.email)
        pin = PinnedPeer(
            email, bundle.identity_key.public_bytes_raw(), self.clock(), accepted=True
        )
        with self.store.lock:
            peers = self._load()
            peers[email] = pin
            self._save(peers)
        return pin
