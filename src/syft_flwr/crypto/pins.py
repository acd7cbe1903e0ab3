"""The pin record format of ``peers.json``: one peer's pinned identity key.

:class:`PinnedPeer` is what a pin holds; :func:`parse_peers` reads the records
back (every field checked; an unreadable record is an error, never "no pins"),
:func:`peer_records` writes them, and :func:`canonical` is the one fixed
serialization the file's integrity tag covers. Deciding what to pin and when to
refuse is :class:`~syft_flwr.crypto.trust.TrustStore`.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from syft_flwr.crypto.keys import fingerprint, fingerprint_digits
from syft_flwr.errors import EncryptionError

__all__ = ["PinnedPeer", "canonical", "parse_peers", "peer_records"]


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
    version : int
        The highest key version seen from this identity (0: none published).
    """

    email: str
    identity_key: bytes
    pinned_at: float
    accepted: bool = False
    version: int = 0

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


def canonical(peers: Any) -> str:
    """The records re-serialized one fixed way (what the integrity tag covers)."""
    # What the tag covers: the parsed records, re-serialized one fixed way, so
    # the file's indentation or key order never matters but every value does.
    return json.dumps(peers, sort_keys=True, separators=(",", ":"), allow_nan=False)


def parse_peers(records: Any) -> dict[str, PinnedPeer]:
    """The pins in ``records`` (a parsed ``peers``), every field checked."""
    try:
        return {
            email: PinnedPeer(
                email=email,
                identity_key=_unb64(entry["identity_key"]),
                pinned_at=float(entry["pinned_at"]),
                accepted=bool(entry.get("accepted", False)),
                version=_version_of(entry.get("version", 0)),
            )
            for email, entry in records.items()
        }
    except (KeyError, TypeError, ValueError, AttributeError, binascii.Error) as exc:
        # Never fall back to "no pins": that would silently re-trust everyone.
        raise EncryptionError(f"pinned peer keys are unreadable: {exc}") from exc


def _version_of(value: Any) -> int:
    if type(value) is not int or value < 0:
        raise ValueError(f"key version {value!r} is not a non-negative integer")
    return value


def peer_records(peers: dict[str, PinnedPeer]) -> dict[str, dict[str, Any]]:
    """The JSON records of ``peers``, by email in sorted order."""
    return {
        p.email: {
            "identity_key": _b64(p.identity_key),
            "fingerprint": p.fingerprint,
            "pinned_at": p.pinned_at,
            "accepted": p.accepted,
            "version": p.version,
        }
        for p in sorted(peers.values(), key=lambda p: p.email)
    }
