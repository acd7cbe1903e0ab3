"""Identity keys, signed prekeys and DID documents, in syft-crypto 0.1.2's formats.

Every SyftBox user has two long-term key pairs:

* an **identity key** (Ed25519), used only to sign the prekey, and
* a **signed prekey** ("SPK", X25519), used for Diffie-Hellman.

The private halves live in ``<data_dir>/../.syftbox/<hash8>/pvt.jwks.json`` (mode
0600) and the public halves in the synced, world-readable
``<datasites>/<email>/public/did.json``. Both the locations and the JSON layouts are
exactly syft-crypto 0.1.2's, so keys created by syft-rpc/syft-event keep working and
keys created here work there.

One addition, which syft-crypto readers ignore: a **key version** that every
prekey rotation increases, kept in the key file (``"prekey_version"``) and
published, signed, in the DID (see :mod:`syft_flwr.crypto.key_version`). Keys and
DIDs without it are version 0.

Everything here is a plain function of paths/bytes; nothing talks to the network.
Key files live in :mod:`~syft_flwr.crypto.key_files`, DID documents in
:mod:`~syft_flwr.crypto.did`, fingerprints in :mod:`~syft_flwr.crypto.fingerprint`;
this module keeps the policy that ties them (:func:`ensure_keys`) and every name
it always had.
"""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

from syft_flwr.crypto._key_io import _CONFLICT_NAME, _DID_FILE_MODE

# Kept importable from here: other stores write files the same way, and these
# names were always read from this module.
from syft_flwr.crypto._key_io import DID_CONTEXT as DID_CONTEXT
from syft_flwr.crypto._key_io import IDENTITY_KID as IDENTITY_KID
from syft_flwr.crypto._key_io import PREKEY_KID as PREKEY_KID
from syft_flwr.crypto._key_io import _atomic_write as _atomic_write
from syft_flwr.crypto.did import (
    PublicBundle,
    _did_bytes,
    did_path,
    load_public_bundle,
    make_did_document,
    public_bundle_of,
    save_did_document,
)
from syft_flwr.crypto.fingerprint import (
    fingerprint,
    fingerprint_digits,
    fingerprint_matches,
)
from syft_flwr.crypto.key_files import (
    PrivateKeys,
    _write_private_keys,
    generate_keys,
    load_private_keys,
    private_key_path,
    save_private_keys,
)
from syft_flwr.crypto.key_version import MAX_KEY_VERSION
from syft_flwr.errors import EncryptionError, KeyConflictError

__all__ = [
    "PrivateKeys",
    "PublicBundle",
    "did_path",
    "ensure_keys",
    "fingerprint",
    "fingerprint_digits",
    "fingerprint_matches",
    "catch_up_version",
    "generate_keys",
    "load_private_keys",
    "load_public_bundle",
    "make_did_document",
    "private_key_path",
    "public_bundle_of",
    "save_did_document",
    "save_private_keys",
]


def _same_keys(bundle: PublicBundle, keys: PrivateKeys) -> bool:
    return bundle.identity_key.public_bytes_raw() == (
        keys.identity.public_key().public_bytes_raw()
    ) and bundle.signed_prekey.public_bytes_raw() == (
        keys.signed_prekey.public_key().public_bytes_raw()
    )


def ensure_keys(
    *, data_dir: Path, datasites_dir: Path, server_url: str, email: str
) -> PrivateKeys:
    """Load the user's keys, creating them on first use; never replace them silently.

    ========================  =====================================================
    on disk                   action
    ========================  =====================================================
    ``did.conflict.json``     :class:`KeyConflictError` (a sync conflict on the DID)
    neither keys nor DID      generate, save keys (0600), publish DID
    keys, no DID              publish the DID of the existing keys
    DID, no keys              :class:`KeyConflictError`
    keys and DID              check they match, else :class:`KeyConflictError`;
                              same identity key but another prekey or a lower
                              version (an interrupted rotation, an old DID put
                              back): republish the DID of the key file; a higher
                              published version (a key file restored from a
                              backup): move the key file's version past it first
    ========================  =====================================================

    Nothing is ever overwritten. Concurrent first calls are safe: files are
    published with create-if-absent semantics and a loser adopts the winner's keys.

    Parameters
    ----------
    data_dir : Path
        SyftBox data directory (the keys live next to it, see
        :func:`private_key_path`).
    datasites_dir : Path
        Its ``datasites`` directory (the DID lives in ``<email>/public/``).
    server_url : str
        SyftBox server URL from the client config.
    email : str
        The user's email, as in the client config.

    Returns
    -------
    PrivateKeys

    Raises
    ------
    KeyConflictError
        See the table; the message says how to resolve it.
    KeyFilePermissionError
        The private key file is accessible by other users.
    """
    key_file = private_key_path(data_dir, server_url, email)
    did_file = did_path(datasites_dir, email)
    _refuse_sync_conflict(did_file, key_file, email)
    # Check the DID first: it is only ever written after the keys exist, so seeing
    # it means the keys existed already (no false conflict in a concurrent start).
    have_did = did_file.exists()
    have_keys = key_file.exists()
    if have_did and not have_keys:
        _refuse_did_without_keys(did_file, key_file)
    keys = load_private_keys(key_file) if have_keys else _first_keys(key_file)
    if not have_did and _publish_first_did(did_file, keys, email, server_url):
        return keys
    return _match_published(key_file, did_file, keys, email, server_url)


def _refuse_sync_conflict(did_file: Path, key_file: Path, email: str) -> None:
    conflict = did_file.with_name(_CONFLICT_NAME)
    if conflict.exists():
        raise KeyConflictError(
            f"{conflict} exists: the sync client found two different DID documents "
            f"for {email}. Keep the one matching your private keys ({key_file}) as "
            "did.json, delete the other, then retry. Nothing was changed."
        )


def _refuse_did_without_keys(did_file: Path, key_file: Path) -> NoReturn:
    raise KeyConflictError(
        f"{did_file} is published but there are no matching private keys at "
        f"{key_file}. Restore the key file from a backup or from your other "
        f"device, or - if the keys are lost for good - move {did_file} away so "
        "new keys can be generated (peers must then re-check your fingerprint, "
        "and messages encrypted to the old keys become unreadable). Nothing was "
        "overwritten."
    )


def _first_keys(key_file: Path) -> PrivateKeys:
    """New keys saved create-if-absent; the winner's keys if another process saved first."""
    keys = generate_keys()
    try:
        _write_private_keys(key_file, keys, exclusive=True)
    except FileExistsError:
        keys = load_private_keys(key_file)  # another process won the race
    return keys


def _publish_first_did(
    did_file: Path, keys: PrivateKeys, email: str, server_url: str
) -> bool:
    """Publish the DID of ``keys`` create-if-absent; False if one appeared meanwhile."""
    did_file.parent.mkdir(parents=True, exist_ok=True)
    doc = make_did_document(keys, email, server_url)
    try:
        _atomic_write(
            did_file,
            _did_bytes(doc),
            _DID_FILE_MODE,
            exclusive=True,
            force_mode=False,
        )
        return True
    except FileExistsError:
        return False  # published meanwhile; verify it like any existing DID


def _match_published(
    key_file: Path, did_file: Path, keys: PrivateKeys, email: str, server_url: str
) -> PrivateKeys:
    """The keys, once the published DID is theirs (republished if stale), else refuse."""
    try:
        bundle = load_public_bundle(did_file, email)
    except EncryptionError as exc:
        raise KeyConflictError(
            f"{did_file} cannot be used ({exc}); it may still be syncing. If it "
            f"persists, replace it with the DID of {key_file} (move the file away and "
            "retry). Nothing was overwritten."
        ) from exc
    if (
        bundle.identity_key.public_bytes_raw()
        == keys.identity.public_key().public_bytes_raw()
    ):
        return _republish_if_stale(key_file, did_file, keys, bundle, email, server_url)
    if not _same_keys(bundle, keys):
        raise KeyConflictError(
            f"the published {did_file} (fingerprint {fingerprint(bundle)}) does not "
            f"match the private keys at {key_file} (fingerprint {fingerprint(keys)}). "
            "Restore the matching key file, or move the DID away to publish these "
            "keys instead. Nothing was overwritten."
        )
    return keys


def _republish_if_stale(
    key_file: Path,
    did_file: Path,
    keys: PrivateKeys,
    bundle: PublicBundle,
    email: str,
    server_url: str,
) -> PrivateKeys:
    """Make the published DID the key file's, under our identity; return the keys.

    Another prekey or a lower version is published when a rotation was interrupted
    between saving the keys (written first) and publishing the DID, or when
    someone put an old ``did.json`` back: the key file wins. A *higher* version
    can only have been signed by our identity key (a key file restored from an
    older backup): the key file then moves past it, so peers, who pinned that
    version, accept what is published next.
    """
    caught_up = catch_up_version(keys, bundle)
    if caught_up is not keys:
        keys = caught_up
        save_private_keys(key_file, keys)
    if not _same_keys(bundle, keys) or bundle.version != keys.prekey_version:
        save_did_document(did_file, make_did_document(keys, email, server_url))
    return keys


def catch_up_version(keys: PrivateKeys, published: PublicBundle) -> PrivateKeys:
    """``keys`` at a version peers accept after seeing ``published``.

    ``published`` is our identity's verified DID. A version above the key file's
    can only have been signed by our identity key (a key file restored from an
    older backup); peers pinned it, so the key file's prekey takes that version
    (the same prekey) or the next one (another prekey). Otherwise ``keys`` is
    returned unchanged (the same object).

    Parameters
    ----------
    keys : PrivateKeys
        Our keys, as in the key file.
    published : PublicBundle
        What is published for us now, with the same identity key.

    Returns
    -------
    PrivateKeys
    """
    if published.version <= keys.prekey_version:
        return keys
    same = _same_keys(published, keys)
    version = published.version if same else published.version + 1
    return PrivateKeys(keys.identity, keys.signed_prekey, min(version, MAX_KEY_VERSION))
