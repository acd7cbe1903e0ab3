"""Authenticate a party's own private state with a key only that party holds.

A researcher's resume journal, a data owner's request ledger and kept replies, the
review store and the peer pins are files a party writes and later reads back and
acts on. They live in a local state folder, but a folder that is synced or shared by
mistake (or any other local user with write access) must not be able to steer a
run through them. Each such record therefore carries an HMAC-SHA256 tag under a key
derived from the party's Ed25519 identity private key:

``key(purpose) = HKDF-SHA256(IKM = identity private key, salt = 32 zero bytes,
info = "syft_flwr/state-mac/v1/" + purpose)``

and ``tag = HMAC-SHA256(key(purpose), len-prefixed fields...)``. ``purpose`` names
the store (``"journal"``, ``"ledger"``, ``"review"``, ``"pins"``, ...) so a record
of one store never verifies as a record of another, and callers put whatever binds
a record to its place (the run, the peer, the record's id) among the fields. The
key never leaves memory; nothing about it is written to disk.
"""

from __future__ import annotations

import hashlib
import hmac
import struct

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from syft_flwr.crypto.keys import PrivateKeys
from syft_flwr.errors import StateIntegrityError

__all__ = ["TAG_HEX_LEN", "TAG_LEN", "StateKey"]

_INFO_PREFIX = b"syft_flwr/state-mac/v1/"
#: Length of :meth:`StateKey.tag` (a raw SHA-256 HMAC), as stored after a record.
TAG_LEN = 32
#: Length of :meth:`StateKey.tag_hex` (a SHA-256 HMAC as lowercase hex).
TAG_HEX_LEN = 64


def _encode(fields: tuple[bytes | str, ...]) -> bytes:
    # Length-prefix every field so ("ab", "c") and ("a", "bc") never collide.
    out = bytearray()
    for value in fields:
        raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
        out += struct.pack(">Q", len(raw)) + raw
    return bytes(out)


class StateKey:
    """The MAC key of one private store of one party.

    Parameters
    ----------
    keys : PrivateKeys
        The party's own long-term keys (only the identity key is used).
    purpose : str
        Which store the key is for; records of one purpose never verify under another.
    """

    __slots__ = ("_key", "purpose")

    def __init__(self, keys: PrivateKeys, purpose: str) -> None:
        if not purpose or not purpose.isascii():
            raise ValueError("purpose must be a non-empty ASCII name")
        self.purpose = purpose
        self._key = HKDF(
            algorithm=hashes.SHA256(),
            length=32,
            salt=bytes(32),
            info=_INFO_PREFIX + purpose.encode("ascii"),
        ).derive(keys.identity.private_bytes_raw())

    def tag(self, *fields: bytes | str) -> bytes:
        """Return the 32-byte HMAC-SHA256 tag of ``fields`` (length-prefixed)."""
        return hmac.new(self._key, _encode(fields), hashlib.sha256).digest()

    def tag_hex(self, *fields: bytes | str) -> str:
        """Return :meth:`tag` as 64 lowercase hex digits (for JSON records)."""
        return self.tag(*fields).hex()

    def verify(self, tag: bytes | str, *fields: bytes | str, what: str) -> None:
        """Raise :class:`StateIntegrityError` unless ``tag`` authenticates ``fields``.

        Parameters
        ----------
        tag : bytes or str
            The stored tag (raw or hex, as written by :meth:`tag` / :meth:`tag_hex`).
        *fields : bytes or str
            The record's fields, in the order they were tagged.
        what : str
            Names the record in the error, e.g. ``"resume journal entry 3"``.
        """
        expected = self.tag(*fields)
        if isinstance(tag, str):
            try:
                got = bytes.fromhex(tag) if len(tag) == TAG_HEX_LEN else b""
            except ValueError:
                got = b""
        else:
            got = bytes(tag)
        if not hmac.compare_digest(expected, got):
            raise StateIntegrityError(
                f"{what} failed its integrity check (changed, copied from another "
                "party or run, or written without a tag); it was not used"
            )

    def __repr__(self) -> str:
        return f"StateKey(purpose={self.purpose!r})"
