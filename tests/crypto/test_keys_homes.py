"""Issue 25: crypto/keys.py split along its seam; every old name still resolves."""

from __future__ import annotations

import importlib

import pytest

from syft_flwr.crypto import keys
from syft_flwr.crypto.keys import generate_keys, public_bundle_of

HOMES = {
    "PrivateKeys": "syft_flwr.crypto.key_files",
    "generate_keys": "syft_flwr.crypto.key_files",
    "load_private_keys": "syft_flwr.crypto.key_files",
    "private_key_path": "syft_flwr.crypto.key_files",
    "save_private_keys": "syft_flwr.crypto.key_files",
    "PublicBundle": "syft_flwr.crypto.did",
    "did_path": "syft_flwr.crypto.did",
    "load_public_bundle": "syft_flwr.crypto.did",
    "make_did_document": "syft_flwr.crypto.did",
    "public_bundle_of": "syft_flwr.crypto.did",
    "save_did_document": "syft_flwr.crypto.did",
    "fingerprint": "syft_flwr.crypto.fingerprint",
    "fingerprint_digits": "syft_flwr.crypto.fingerprint",
    "fingerprint_matches": "syft_flwr.crypto.fingerprint",
    "_atomic_write": "syft_flwr.crypto._key_io",
    "IDENTITY_KID": "syft_flwr.crypto._key_io",
    "PREKEY_KID": "syft_flwr.crypto._key_io",
    "DID_CONTEXT": "syft_flwr.crypto._key_io",
}


@pytest.mark.parametrize("name", sorted(HOMES))
def test_keys_names_are_their_new_homes_objects(name: str) -> None:
    home = importlib.import_module(HOMES[name])
    assert getattr(keys, name) is getattr(home, name)


def test_every_documented_keys_name_resolves() -> None:
    assert set(keys.__all__) - set(HOMES) == {"ensure_keys", "catch_up_version"}
    assert callable(keys.ensure_keys) and callable(keys.catch_up_version)


def test_reprs_show_the_same_fingerprint_and_no_secret() -> None:
    mine = generate_keys()
    bundle = public_bundle_of(mine, "do@example.org")
    fp = keys.fingerprint(mine)
    assert repr(mine) == f"PrivateKeys(fingerprint={fp!r})"
    assert repr(bundle) == f"PublicBundle(email='do@example.org', fingerprint={fp!r})"
    assert mine.identity.private_bytes_raw().hex()[:16] not in repr(mine)
