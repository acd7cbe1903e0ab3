"""Issue 25: crypto/keys.py and crypto/policy.py split along their seams; every old name still resolves."""

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


POLICY_HOMES = {
    "KeyDirectory": "syft_flwr.crypto.directory",
    "did_key": "syft_flwr.crypto.directory",
    "publish_did": "syft_flwr.crypto.directory",
    "DEFAULT_DID_MAX_AGE": "syft_flwr.crypto.directory",
    "MAX_DID_BYTES": "syft_flwr.crypto.directory",
    "load_keys": "syft_flwr.crypto.own_keys",
    "save_keys": "syft_flwr.crypto.own_keys",
    "load_or_create_keys": "syft_flwr.crypto.own_keys",
    "own_prekeys": "syft_flwr.crypto.own_keys",
    "PrekeyLookup": "syft_flwr.crypto.own_keys",
    "CURRENT_PREKEY_TTL": "syft_flwr.crypto.own_keys",
    "_server_url_of": "syft_flwr.crypto.own_keys",
    "PlaintextPolicy": "syft_flwr.wire.codec_policy",
}


@pytest.mark.parametrize("name", sorted(POLICY_HOMES))
def test_policy_names_are_their_new_homes_objects(name: str) -> None:
    from syft_flwr.crypto import policy

    home = importlib.import_module(POLICY_HOMES[name])
    assert getattr(policy, name) is getattr(home, name)


def test_every_documented_policy_name_resolves() -> None:
    from syft_flwr.crypto import policy

    for name in policy.__all__:
        assert getattr(policy, name) is not None
    stays = {"EncryptionPolicy", "X3DHCodec", "default_policy"}
    assert set(policy.__all__) - set(POLICY_HOMES) == stays
