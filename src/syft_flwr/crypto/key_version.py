"""The signed key version a DID carries, so an old ``did.json`` cannot come back.

A prekey rotation leaves the old DID valid forever: its prekey is still signed by
the identity key. Putting it back (a sync server, a Drive editor, a restored
backup) would make peers seal to a prekey that was destroyed. So every DID this
package publishes carries a counter that each rotation increases, signed by the
identity key over the counter *and* the prekey:

``"syftFlwrKeyVersion": {"version": N, "signature": b64url(Ed25519(IK,
"syft_flwr/did-key-version/v1" 0x00 || IK || SPK || N as 8 bytes big-endian))}``

a top-level member that syft-crypto 0.1.2 readers ignore. Peers pin the highest
version seen (:mod:`syft_flwr.crypto.trust`). DIDs without it are version 0.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from syft_flwr.errors import EncryptionError

__all__ = [
    "KEY_VERSION_FIELD",
    "MAX_KEY_VERSION",
    "check_version",
    "key_version_message",
    "read_version",
]

#: Top-level DID member with the signed key version (syft-crypto ignores it).
KEY_VERSION_FIELD = "syftFlwrKeyVersion"
#: Largest key version (exact as a JSON number in every reader).
MAX_KEY_VERSION = 2**53 - 1
_DOMAIN = b"syft_flwr/did-key-version/v1\x00"


def check_version(value: Any, what: str) -> int:
    """Return ``value`` if it is a key version (an int in ``0..2^53-1``).

    Parameters
    ----------
    value : Any
        As read from a file.
    what : str
        Names the file or document in the error.

    Returns
    -------
    int

    Raises
    ------
    EncryptionError
        Anything else, including ``true`` and ``2.0``.
    """
    # bool is an int subclass; a JSON true must not read as version 1
    if type(value) is not int or not 0 <= value <= MAX_KEY_VERSION:
        raise EncryptionError(f"{what}: key version must be an integer 0..2^53-1")
    return value


def key_version_message(identity: bytes, prekey: bytes, version: int) -> bytes:
    """The bytes the identity key signs to publish ``version`` of ``prekey``.

    Binding the prekey makes a version meaningless for any other prekey: a
    version copied from a newer DID onto an older prekey does not verify.

    Parameters
    ----------
    identity : bytes
        Raw 32-byte Ed25519 identity public key.
    prekey : bytes
        Raw 32-byte X25519 signed prekey.
    version : int
        The key version, ``1..2^53-1``.

    Returns
    -------
    bytes
    """
    return _DOMAIN + identity + prekey + version.to_bytes(8, "big")


def read_version(doc: dict[str, Any], email: str) -> tuple[int, bytes | None]:
    """The DID's ``(key version, its signature)``, not yet verified.

    Parameters
    ----------
    doc : dict
        A parsed DID document.
    email : str
        Its owner (for errors).

    Returns
    -------
    tuple of (int, bytes or None)
        ``(0, None)`` when the DID has no version.

    Raises
    ------
    EncryptionError
        The member is there but malformed (a published version starts at 1).
    """
    if KEY_VERSION_FIELD not in doc:
        return 0, None
    entry = doc[KEY_VERSION_FIELD]
    what = f"{KEY_VERSION_FIELD} of {email}"
    if not isinstance(entry, dict):
        raise EncryptionError(f"{what}: expected a JSON object")
    version = check_version(entry.get("version"), what)
    if version == 0:
        raise EncryptionError(f"{what}: a published version starts at 1")
    sig = entry.get("signature")
    if not isinstance(sig, str):
        raise EncryptionError(f"{what}: signature must be a base64url string")
    try:
        raw = base64.b64decode(
            sig + "=" * (-len(sig) % 4), altchars=b"-_", validate=True
        )
    except (binascii.Error, ValueError) as exc:
        raise EncryptionError(f"{what}: signature is not base64url") from exc
    if len(raw) != 64:
        raise EncryptionError(f"{what}: signature must be 64 bytes, got {len(raw)}")
    return version, raw
