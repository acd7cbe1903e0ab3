"""Trust on first use: pin each peer's identity key the first time it is seen.

A peer's DID document travels through storage others control (a SyftBox server,
a Drive folder). The first identity key seen for a peer is pinned in the party's
private state (``peers.json``, written atomically, mode 0600); a later DID with a
*different identity key* is refused with :class:`~syft_flwr.errors.PeerKeyChangedError`
naming both fingerprints, until the user compares the new fingerprint out of band
and accepts it (:meth:`TrustStore.trust`, ``syft_flwr keys trust EMAIL``). A new
*signed prekey* under the same identity key (a rotation) needs no prompt: its
signature by the pinned identity key is what authenticates it.

Each pin also keeps the highest **key version** seen from the peer (signed by its
identity key, see :mod:`syft_flwr.crypto.keys`); a DID with a lower version, or
without one once a version was seen, is an old ``did.json`` put back and is
refused with :class:`~syft_flwr.errors.KeyRollbackError`.

``peers.json`` is authenticated as a whole with
:class:`~syft_flwr.crypto.state_mac.StateKey` (purpose ``"pins"``): a pin that was
edited, removed or copied from another party fails the check and everything is
refused with :class:`~syft_flwr.errors.StateIntegrityError`; pins are never
silently made again on first use, which would turn tampering into a key swap. A
file from an older syft_flwr (format 1, no tag) is refused too, until the user
adopts it after checking it (:meth:`TrustStore.adopt_legacy`,
``syft_flwr keys adopt-pins``). The record format of a pin is
:mod:`syft_flwr.crypto.pins`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from syft_flwr._email import fold_domain
from syft_flwr.crypto.keys import (
    PrivateKeys,
    PublicBundle,
    fingerprint,
    generate_keys,
)
from syft_flwr.crypto.pins import PinnedPeer as PinnedPeer
from syft_flwr.crypto.pins import canonical as _canonical
from syft_flwr.crypto.pins import parse_peers as _parse_peers
from syft_flwr.crypto.pins import peer_records
from syft_flwr.crypto.state_mac import StateKey
from syft_flwr.crypto.store import FileKeyStore, KeyStore
from syft_flwr.errors import (
    EncryptionError,
    KeyRollbackError,
    PeerKeyChangedError,
    StateIntegrityError,
)

__all__ = ["PEERS_FILE", "PinnedPeer", "TrustStore"]

logger = logging.getLogger("syft_flwr.crypto")

PEERS_FILE = "peers.json"
_FORMAT = 2
_LEGACY_FORMAT = 1  # untagged, written before pins were authenticated


def _rollback_error(email: str, pinned: int, published: int) -> KeyRollbackError:
    shown = f"version {published}" if published else "no version"
    return KeyRollbackError(
        f"{email}'s published keys are older than the ones you already saw "
        f"({shown} < {pinned}): someone may have put back an old key file "
        f"(did.json). Nothing is sent to or accepted from {email} until they "
        "publish their current keys again: ask them to start syft_flwr once (it "
        "republishes them) or run `syft_flwr keys rotate`.",
        email=email,
        pinned=pinned,
        published=published,
    )


class TrustStore:
    """The pinned identity keys of one party's peers.

    Parameters
    ----------
    store : KeyStore
        The party's private key store (see :func:`~syft_flwr.crypto.store.key_store_for`).
    keys : PrivateKeys, optional
        The party's own keys: the pins are authenticated under
        ``StateKey(keys, "pins")``. Required for a store on disk; without it (an
        in-memory store only this object reads) a throw-away key is used.
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
        self,
        store: KeyStore,
        keys: PrivateKeys | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if keys is None and isinstance(store, FileKeyStore):
            raise EncryptionError(
                "pinned peer keys on disk need the party's own keys to be checked"
            )
        self.store = store
        self.clock = clock
        self._mac = StateKey(keys if keys is not None else generate_keys(), "pins")

    def _where(self) -> str:
        if isinstance(self.store, FileKeyStore):
            return str(self.store.path(PEERS_FILE))
        return PEERS_FILE

    def _read(self) -> dict[str, Any] | None:
        doc = self.store.read_json(PEERS_FILE)
        if doc is not None and not isinstance(doc, dict):
            raise StateIntegrityError(f"{self._where()} is not a pin record")
        return doc

    def _load(self) -> dict[str, PinnedPeer]:
        try:
            return self._load_checked()
        except StateIntegrityError as exc:
            # Logged here too: callers may only say that a peer's keys were refused.
            logger.error("refused the pinned peer keys: %s", exc)
            raise

    def _load_checked(self) -> dict[str, PinnedPeer]:
        doc = self._read()
        if doc is None:
            return {}
        if doc.get("format") == _LEGACY_FORMAT and "tag" not in doc:
            raise StateIntegrityError(
                f"{self._where()} (the identity keys you pinned for your peers) was "
                "written by an older syft_flwr without an integrity check, so it "
                "cannot be told apart from a file someone edited; nothing is sent "
                "or accepted until you check it. Run `syft_flwr keys adopt-pins` "
                "to list the pinned fingerprints and keep them (compare them with "
                "your peers), or delete the file to pin every peer again the next "
                "time you exchange."
            )
        tag = doc.get("tag")
        try:
            covered = _canonical(doc.get("peers"))
        except ValueError:  # NaN or Infinity: never written by us
            covered = ""
        self._mac.verify(
            tag if isinstance(tag, str) else "",
            PEERS_FILE,
            str(doc.get("format")),
            covered,
            what=f"the pinned peer keys in {self._where()}",
        )
        return _parse_peers(doc.get("peers"))

    def _save(self, peers: dict[str, PinnedPeer]) -> None:
        # tag what a reader will parse: the records after a JSON round trip
        records = json.loads(_canonical(peer_records(peers)))
        tag = self._mac.tag_hex(PEERS_FILE, str(_FORMAT), _canonical(records))
        self.store.write_json(
            PEERS_FILE, {"format": _FORMAT, "peers": records, "tag": tag}
        )

    def legacy(self) -> dict[str, PinnedPeer] | None:
        """The pins of an untagged ``peers.json`` (older syft_flwr), not checked.

        Returns
        -------
        dict of str to PinnedPeer, or None
            ``None`` if there is no such file (none, or a tagged one).
        """
        with self.store.lock:
            doc = self._read()
            if doc is None or "tag" in doc or doc.get("format") != _LEGACY_FORMAT:
                return None
            return _parse_peers(doc.get("peers"))

    def adopt_legacy(self) -> dict[str, PinnedPeer]:
        """Keep the pins of an untagged ``peers.json`` (older syft_flwr), tagged now.

        Only the user can vouch for such a file; call this after showing them
        the pinned fingerprints. A file that is already tagged is left as is.

        Returns
        -------
        dict of str to PinnedPeer
            The pins now in force.
        """
        with self.store.lock:
            peers = self.legacy()
            if peers is None:
                return self._load()
            self._save(peers)
        logger.warning(
            "adopted %d pinned peer key(s) from an untagged %s, as confirmed by "
            "the user: %s",
            len(peers),
            PEERS_FILE,
            ", ".join(f"{p.email} {p.fingerprint}" for p in peers.values()) or "none",
        )
        return peers

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
                peers[email] = PinnedPeer(
                    email, raw, self.clock(), version=bundle.version
                )
                self._save(peers)
                logger.info(
                    "pinned the identity key of %s on first use: %s (compare it "
                    "with them: `syft_flwr keys show %s`)",
                    email,
                    fingerprint(bundle),
                    email,
                )
                return
            if pin.identity_key == raw:
                self._check_version(peers, pin, bundle)
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

    def _check_version(
        self, peers: dict[str, PinnedPeer], pin: PinnedPeer, bundle: PublicBundle
    ) -> None:
        """Refuse a version below the pinned one; pin a higher one (under the lock)."""
        if bundle.version < pin.version:
            err = _rollback_error(pin.email, pin.version, bundle.version)
            logger.warning("refused the published keys of %s: %s", pin.email, err)
            raise err
        if bundle.version > pin.version:
            peers[pin.email] = replace(pin, version=bundle.version)
            self._save(peers)
            logger.info(
                "%s published key version %d (was %d): a prekey rotation",
                pin.email,
                bundle.version,
                pin.version,
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

        Raises
        ------
        KeyRollbackError
            ``bundle`` is the pinned identity at a lower key version: accepting
            it would bring back a rotated-away prekey, so it is refused here too.
        """
        email = fold_domain(bundle.email)
        raw = bundle.identity_key.public_bytes_raw()
        pin = PinnedPeer(
            email, raw, self.clock(), accepted=True, version=bundle.version
        )
        with self.store.lock:
            peers = self._load()
            old = peers.get(email)
            if (
                old is not None
                and old.identity_key == raw
                and pin.version < old.version
            ):
                raise _rollback_error(email, old.version, pin.version)
            peers[email] = pin
            self._save(peers)
        return pin
