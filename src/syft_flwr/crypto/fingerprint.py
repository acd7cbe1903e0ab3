"""Fingerprints of an identity key, for people to compare out of band."""

from __future__ import annotations

import hashlib
import hmac

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from syft_flwr.crypto._key_io import hex_fingerprint
from syft_flwr.crypto.did import PublicBundle
from syft_flwr.crypto.key_files import PrivateKeys

__all__ = ["fingerprint", "fingerprint_digits", "fingerprint_matches"]


def fingerprint(bundle_or_keys: PublicBundle | PrivateKeys | Ed25519PublicKey) -> str:
    """Short human-comparable fingerprint of an identity key.

    The first 16 bytes of SHA-256 over the raw 32-byte Ed25519 identity public key,
    as 8 space-separated groups of 4 lowercase hex digits, e.g.
    ``"3f2a 9c01 77be 04d2 a5e8 1b6c 0f93 d4a7"``. Only the identity key is
    covered because it signs the prekey; two people comparing it out of band
    (phone, in person) authenticates everything else.

    Parameters
    ----------
    bundle_or_keys : PublicBundle or PrivateKeys or Ed25519PublicKey
        Whose identity key.

    Returns
    -------
    str
    """
    return hex_fingerprint(_identity_public(bundle_or_keys))


def fingerprint_digits(
    bundle_or_keys: PublicBundle | PrivateKeys | Ed25519PublicKey,
) -> str:
    """The identity key's fingerprint as 30 digits in 6 groups, for reading aloud.

    Each group of 5 digits is a 40-bit slice of SHA-256 over the raw identity
    key, reduced modulo 100000 (the way Signal's safety numbers are built), e.g.
    ``"03821 55017 93342 10688 72409 31556"``: about 100 bits, easy to compare on
    a phone call. It covers the same key as :func:`fingerprint` and takes the
    same argument; returns a ``str``.
    """
    digest = hashlib.sha256(_identity_public(bundle_or_keys).public_bytes_raw())
    raw = digest.digest()
    groups = [int.from_bytes(raw[i : i + 5], "big") % 100000 for i in range(0, 30, 5)]
    return " ".join(f"{g:05d}" for g in groups)


def _identity_public(
    bundle_or_keys: PublicBundle | PrivateKeys | Ed25519PublicKey,
) -> Ed25519PublicKey:
    if isinstance(bundle_or_keys, PublicBundle):
        return bundle_or_keys.identity_key
    if isinstance(bundle_or_keys, PrivateKeys):
        return bundle_or_keys.identity.public_key()
    if isinstance(bundle_or_keys, Ed25519PublicKey):
        return bundle_or_keys
    raise TypeError(f"cannot fingerprint {type(bundle_or_keys).__name__}")


def fingerprint_matches(
    text: str, bundle_or_keys: PublicBundle | PrivateKeys | Ed25519PublicKey
) -> bool:
    """Whether ``text`` is the fingerprint of the key, in either printed form.

    Spaces, dashes and letter case are ignored, so ``"3F2A-9C01..."`` matches.

    Parameters
    ----------
    text : str
        A :func:`fingerprint` or :func:`fingerprint_digits`, as a user typed it.
    bundle_or_keys : PublicBundle or PrivateKeys or Ed25519PublicKey
        Whose identity key.

    Returns
    -------
    bool
    """
    given = "".join(ch for ch in str(text).lower() if ch.isalnum())
    forms = (fingerprint(bundle_or_keys), fingerprint_digits(bundle_or_keys))
    return bool(given) and any(
        hmac.compare_digest(given, f.replace(" ", "")) for f in forms
    )
