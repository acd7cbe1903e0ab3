"""syft_flwr.crypto: end-to-end encryption primitives and key management.

:mod:`.keys` keeps identity keys and DID documents in syft-crypto 0.1.2's
locations and formats; :mod:`.cipher` derives a fresh key per message (X3DH,
DH1-DH3, signed by the sender's identity key) and seals chunks with AES-256-GCM
bound to the message context and both identity keys; :mod:`.trust` pins peers'
identity keys on first use, and the highest :mod:`.key_version` seen, so an old
DID cannot come back; :mod:`.prekeys` rotates signed prekeys. See
``docs/security.md`` for the design and threat model.
"""

from __future__ import annotations

from syft_flwr.crypto.cipher import (
    ALGORITHM,
    LEGACY_ALGORITHM,
    TAG_SIZE,
    MessageContext,
    SealedKey,
    decrypt_chunk,
    encrypt_chunk,
    open_key,
    prekey_id,
    seal_key,
)
from syft_flwr.crypto.keys import (
    PrivateKeys,
    PublicBundle,
    did_path,
    ensure_keys,
    fingerprint,
    fingerprint_digits,
    fingerprint_matches,
    generate_keys,
    load_private_keys,
    load_public_bundle,
    make_did_document,
    private_key_path,
    public_bundle_of,
    save_did_document,
    save_private_keys,
)

__all__ = [
    "ALGORITHM",
    "LEGACY_ALGORITHM",
    "MessageContext",
    "PrivateKeys",
    "PublicBundle",
    "SealedKey",
    "TAG_SIZE",
    "decrypt_chunk",
    "did_path",
    "encrypt_chunk",
    "ensure_keys",
    "fingerprint",
    "fingerprint_digits",
    "fingerprint_matches",
    "generate_keys",
    "load_private_keys",
    "load_public_bundle",
    "make_did_document",
    "open_key",
    "prekey_id",
    "private_key_path",
    "public_bundle_of",
    "save_did_document",
    "save_private_keys",
    "seal_key",
]
