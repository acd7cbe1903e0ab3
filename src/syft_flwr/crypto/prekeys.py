"""Rotated signed prekeys: kept for a grace period, then destroyed.

After ``syft_flwr keys rotate`` the old private prekey moves to the party's
private key store (``prekeys.json``, atomic, mode 0600) with a destruction time.
Until then, messages sealed to it (in flight, or from peers still holding the
old DID) still open; afterwards it is removed from the store, so messages
captured before the rotation can no longer be opened by anyone, including
whoever steals the party's keys later: the forward-secrecy window.

Destruction happens at the first lookup, rotation or start after the deadline
(there is no background timer); :meth:`PrekeyRing.purge` does it explicitly.
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from syft_flwr.crypto.cipher import prekey_id
from syft_flwr.crypto.store import KeyStore
from syft_flwr.errors import EncryptionError

__all__ = ["PREKEYS_FILE", "PrekeyRing", "RetiredPrekey"]

logger = logging.getLogger("syft_flwr.crypto")

PREKEYS_FILE = "prekeys.json"
_FORMAT = 1


@dataclass(frozen=True)
class RetiredPrekey:
    """A rotated-away signed prekey, public part only (for display).

    Attributes
    ----------
    id : str
        Its :func:`~syft_flwr.crypto.cipher.prekey_id`.
    retired_at : float
        POSIX time of the rotation.
    destroy_after : float
        POSIX time from which it is destroyed.
    """

    id: str
    retired_at: float
    destroy_after: float


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


class PrekeyRing:
    """The retired signed prekeys of one party.

    Parameters
    ----------
    store : KeyStore
        The party's private key store.
    clock : callable, optional
        Current POSIX time; default ``time.time`` (tests inject a fake one).
    """

    def __init__(
        self, store: KeyStore, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.clock = clock

    def _load(self) -> list[dict[str, object]]:
        doc = self.store.read_json(PREKEYS_FILE)
        if doc is None:
            return []
        entries = doc.get("prekeys") if isinstance(doc, dict) else None
        if not isinstance(entries, list):
            raise EncryptionError(f"{PREKEYS_FILE} is malformed")
        return entries

    def _save(self, entries: list[dict[str, object]]) -> None:
        if entries:
            self.store.write_json(PREKEYS_FILE, {"format": _FORMAT, "prekeys": entries})
        else:
            self.store.delete(PREKEYS_FILE)

    def retire(self, prekey: X25519PrivateKey, grace: float) -> RetiredPrekey:
        """Keep ``prekey`` until ``now + grace``, then destroy it.

        Parameters
        ----------
        prekey : X25519PrivateKey
            The signed prekey being replaced.
        grace : float
            Seconds it keeps opening messages; ``0`` destroys it at once.

        Returns
        -------
        RetiredPrekey
        """
        now = self.clock()
        entry: dict[str, object] = {
            "id": prekey_id(prekey.public_key()),
            "d": _b64(prekey.private_bytes_raw()),
            "retired_at": now,
            "destroy_after": now + max(0.0, float(grace)),
        }
        with self.store.lock:
            entries = [e for e in self._load() if e.get("id") != entry["id"]]
            self._save([*entries, entry])
        self.purge()
        return RetiredPrekey(
            str(entry["id"]),
            now,
            float(entry["destroy_after"]),  # type: ignore[arg-type]
        )

    def purge(self) -> list[str]:
        """Destroy every retired prekey whose grace period is over.

        Returns
        -------
        list of str
            Ids of the prekeys destroyed now.
        """
        now = self.clock()
        with self.store.lock:
            entries = self._load()
            keep = [e for e in entries if float(e["destroy_after"]) > now]  # type: ignore[arg-type]
            gone = [str(e["id"]) for e in entries if e not in keep]
            if gone:
                self._save(keep)
        for pid in gone:
            logger.info("destroyed retired signed prekey %s (grace period over)", pid)
        return gone

    def retired(self) -> list[RetiredPrekey]:
        """The retired prekeys still kept (after purging expired ones).

        Returns
        -------
        list of RetiredPrekey
        """
        self.purge()
        with self.store.lock:
            return [
                RetiredPrekey(
                    str(e["id"]),
                    float(e["retired_at"]),  # type: ignore[arg-type]
                    float(e["destroy_after"]),  # type: ignore[arg-type]
                )
                for e in self._load()
            ]

    def find(self, pid: str) -> X25519PrivateKey | None:
        """The retired prekey ``pid`` if it is still inside its grace period.

        Parameters
        ----------
        pid : str
            A :func:`~syft_flwr.crypto.cipher.prekey_id` from a message header.

        Returns
        -------
        X25519PrivateKey or None
        """
        self.purge()
        with self.store.lock:
            for e in self._load():
                if e.get("id") == pid:
                    try:
                        d = str(e["d"])
                        raw = base64.urlsafe_b64decode(d + "=" * (-len(d) % 4))
                        return X25519PrivateKey.from_private_bytes(raw)
                    except (KeyError, ValueError, binascii.Error) as exc:
                        raise EncryptionError(
                            f"retired prekey {pid} is corrupt"
                        ) from exc
        return None
