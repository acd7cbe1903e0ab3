"""Key storage, DID documents and the ensure_keys policy (syft-crypto 0.1.2 formats)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import stat
import threading
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from syft_flwr.crypto import (
    PrivateKeys,
    PublicBundle,
    did_path,
    ensure_keys,
    fingerprint,
    generate_keys,
    load_private_keys,
    load_public_bundle,
    make_did_document,
    private_key_path,
    public_bundle_of,
    save_did_document,
    save_private_keys,
)
from syft_flwr.errors import (
    BadSignatureError,
    ConfigError,
    EncryptionError,
    KeyConflictError,
    KeyFilePermissionError,
    KeyNotFound,
)

posix_only = pytest.mark.skipif(os.name == "nt", reason="POSIX file modes")

ALICE = "alice@example.org"
BOB = "bob@example.org"
SERVER = "http://127.0.0.1:8080"


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def unb64u(text: str) -> bytes:
    assert "=" not in text
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def snapshot(*paths: Path) -> dict[Path, bytes | None]:
    return {p: (p.read_bytes() if p.exists() else None) for p in paths}


class Box:
    """One user's SyftBox layout under tmp_path (several users share datasites)."""

    def __init__(self, root: Path, email: str, shared: Path | None = None) -> None:
        self.email = email
        self.data_dir = root / "SyftBox"
        self.datasites = shared if shared is not None else self.data_dir / "datasites"
        self.key_file = private_key_path(self.data_dir, SERVER, email)
        self.did_file = did_path(self.datasites, email)

    def ensure(self) -> PrivateKeys:
        return ensure_keys(
            data_dir=self.data_dir,
            datasites_dir=self.datasites,
            server_url=SERVER,
            email=self.email,
        )


# --------------------------------------------------------------------------- paths


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080", "http://127.0.0.1:8080/"])
def test_private_key_path_formula_matches_hand_computed_hash(
    tmp_path: Path, url: str
) -> None:
    # sha256(b"http://127.0.0.1:8080/::alice@example.org").hexdigest()[:8],
    # computed once by hand; pydantic's AnyHttpUrl adds the trailing slash.
    assert (
        hashlib.sha256(b"http://127.0.0.1:8080/::alice@example.org").hexdigest()[:8]
        == "0ef61f9c"
    )
    path = private_key_path(tmp_path / "SyftBox", url, ALICE)
    assert path == tmp_path.resolve() / ".syftbox" / "0ef61f9c" / "pvt.jwks.json"


def test_private_key_path_default_server_and_other_inputs(tmp_path: Path) -> None:
    data_dir = tmp_path / "SyftBox"
    # sha256(b"https://syftbox.net/::alice@example.org")[:8]
    assert private_key_path(data_dir, "https://syftbox.net", ALICE).parent.name == (
        "456788da"
    )
    # normalization as pydantic does: host lower-cased, default port dropped
    assert private_key_path(data_dir, "https://SyftBox.NET:443", ALICE) == (
        private_key_path(data_dir, "https://syftbox.net/", ALICE)
    )
    assert private_key_path(data_dir, SERVER, BOB) != private_key_path(
        data_dir, SERVER, ALICE
    )
    # data_dir is resolved like syft-core (".." and symlinks), keys go in its parent
    assert private_key_path(tmp_path / "x" / ".." / "SyftBox", SERVER, ALICE) == (
        private_key_path(data_dir, SERVER, ALICE)
    )
    with pytest.raises(ConfigError):
        private_key_path(data_dir, "not a url", ALICE)


def test_did_path(tmp_path: Path) -> None:
    assert did_path(tmp_path, ALICE) == tmp_path / ALICE / "public" / "did.json"


# --------------------------------------------------------------------------- files


def test_private_key_file_exact_layout_and_round_trip(tmp_path: Path) -> None:
    keys = generate_keys()
    path = tmp_path / ".syftbox" / "abcd1234" / "pvt.jwks.json"
    save_private_keys(path, keys)
    data = json.loads(path.read_text())
    # syft-crypto's two JWKs, plus our key version (a top-level member it ignores)
    assert list(data) == ["identity_key", "signed_prekey", "prekey_version"]
    assert data["prekey_version"] == 1
    ik, spk = data["identity_key"], data["signed_prekey"]
    assert ik == {
        "kty": "OKP",
        "kid": "identity-key",
        "crv": "Ed25519",
        "x": b64u(keys.identity.public_key().public_bytes_raw()),
        "d": b64u(keys.identity.private_bytes_raw()),
    }
    assert spk == {
        "kty": "OKP",
        "kid": "signed-prekey",
        "crv": "X25519",
        "x": b64u(keys.signed_prekey.public_key().public_bytes_raw()),
        "d": b64u(keys.signed_prekey.private_bytes_raw()),
    }
    for jwk in (ik, spk):
        assert len(unb64u(jwk["x"])) == 32 and len(unb64u(jwk["d"])) == 32
    assert load_private_keys(path) == keys
    assert load_private_keys(path).prekey_version == 1
    assert load_private_keys(path) != generate_keys()
    assert not [p for p in path.parent.iterdir() if p.name != "pvt.jwks.json"]
    # keys without a version (syft-crypto's) are written in exactly its layout
    save_private_keys(path, PrivateKeys(keys.identity, keys.signed_prekey))
    assert list(json.loads(path.read_text())) == ["identity_key", "signed_prekey"]
    assert load_private_keys(path).prekey_version == 0


def test_loads_syft_crypto_file_without_kid(tmp_path: Path) -> None:
    # jwcrypto's export has no kid and sorted keys; such files must keep working
    keys = generate_keys()
    path = tmp_path / "k" / "pvt.jwks.json"
    path.parent.mkdir()
    doc = {
        "identity_key": {
            "crv": "Ed25519",
            "d": b64u(keys.identity.private_bytes_raw()),
            "kty": "OKP",
            "x": b64u(keys.identity.public_key().public_bytes_raw()),
        },
        "signed_prekey": {
            "crv": "X25519",
            "d": b64u(keys.signed_prekey.private_bytes_raw()),
            "kty": "OKP",
            "x": b64u(keys.signed_prekey.public_key().public_bytes_raw()),
        },
    }
    path.write_text(json.dumps(doc))
    path.chmod(0o600)
    assert load_private_keys(path) == keys


@posix_only
def test_key_file_0600_and_dir_0700_even_with_permissive_umask(tmp_path: Path) -> None:
    path = tmp_path / ".syftbox" / "abcd1234" / "pvt.jwks.json"
    old = os.umask(0)
    try:
        save_private_keys(path, generate_keys())
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


@posix_only
def test_existing_loose_key_dir_is_tightened(tmp_path: Path) -> None:
    path = tmp_path / "k" / "pvt.jwks.json"
    path.parent.mkdir(mode=0o755)
    path.parent.chmod(0o755)
    save_private_keys(path, generate_keys())
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


@posix_only
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_load_refuses_key_file_readable_by_others(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "k" / "pvt.jwks.json"
    save_private_keys(path, generate_keys())
    path.chmod(mode)
    with pytest.raises(KeyFilePermissionError, match="chmod 600"):
        load_private_keys(path)
    path.chmod(0o600)
    load_private_keys(path)


def test_load_missing_and_malformed_key_files(tmp_path: Path) -> None:
    path = tmp_path / "pvt.jwks.json"
    with pytest.raises(KeyNotFound):
        load_private_keys(path)
    for text in ["{not json", "[]", '{"identity_key": {}}', "\udcff"]:
        path.write_bytes(text.encode("utf-8", "surrogateescape"))
        path.chmod(0o600)
        with pytest.raises(EncryptionError):
            load_private_keys(path)


def test_load_rejects_inconsistent_or_wrong_curve_jwk(tmp_path: Path) -> None:
    path = tmp_path / "k" / "pvt.jwks.json"
    save_private_keys(path, generate_keys())
    good = json.loads(path.read_text())

    def write(doc: dict[str, Any]) -> None:
        path.write_text(json.dumps(doc))

    bad = json.loads(json.dumps(good))
    bad["identity_key"]["x"] = b64u(bytes(32))  # x does not match d
    write(bad)
    with pytest.raises(EncryptionError, match="does not match"):
        load_private_keys(path)
    bad = json.loads(json.dumps(good))
    bad["signed_prekey"]["crv"] = "Ed25519"
    write(bad)
    with pytest.raises(EncryptionError, match="X25519"):
        load_private_keys(path)
    bad = json.loads(json.dumps(good))
    bad["signed_prekey"]["d"] = bad["signed_prekey"]["d"][:-3]  # 30 bytes
    write(bad)
    with pytest.raises(EncryptionError, match="32 bytes"):
        load_private_keys(path)


def test_private_keys_repr_hides_secrets() -> None:
    keys = generate_keys()
    text = repr(keys)
    assert b64u(keys.identity.private_bytes_raw()) not in text
    assert keys.identity.private_bytes_raw().hex() not in text
    assert fingerprint(keys) in text


# --------------------------------------------------------------------------- DIDs


def test_did_document_exact_layout() -> None:
    keys = generate_keys()
    doc = make_did_document(keys, ALICE, SERVER)
    did = "did:web:127.0.0.1:alice%40example.org"
    spk_raw = keys.signed_prekey.public_key().public_bytes_raw()
    sig = unb64u(doc["keyAgreement"][0]["publicKeyJwk"]["signature"])
    keys.identity.public_key().verify(sig, spk_raw)  # raises if wrong
    # our one addition, a member syft-crypto readers ignore: the signed key version
    version = doc.pop("syftFlwrKeyVersion")
    assert list(version) == ["version", "signature"] and version["version"] == 1
    keys.identity.public_key().verify(  # over a domain tag, IK, SPK and the version
        unb64u(version["signature"]),
        b"syft_flwr/did-key-version/v1\x00"
        + keys.identity.public_key().public_bytes_raw()
        + spk_raw
        + (1).to_bytes(8, "big"),
    )
    assert doc == {
        "@context": [
            "https://www.w3.org/ns/did/v1",
            "https://w3id.org/security/suites/ed25519-2020/v1",
            "https://w3id.org/security/suites/x25519-2020/v1",
        ],
        "id": did,
        "verificationMethod": [
            {
                "id": f"{did}#identity-key",
                "type": "Ed25519VerificationKey2020",
                "controller": did,
                "publicKeyJwk": {
                    "kty": "OKP",
                    "kid": "identity-key",
                    "crv": "Ed25519",
                    "x": b64u(keys.identity.public_key().public_bytes_raw()),
                    "use": "sig",
                },
            }
        ],
        "keyAgreement": [
            {
                "id": f"{did}#signed-prekey",
                "type": "X25519KeyAgreementKey2020",
                "controller": did,
                "publicKeyJwk": {
                    "kty": "OKP",
                    "kid": "signed-prekey",
                    "crv": "X25519",
                    "x": b64u(spk_raw),
                    "use": "enc",
                    "signature": b64u(sig),
                },
            }
        ],
    }
    assert list(doc["keyAgreement"][0]["publicKeyJwk"]) == [
        "kty",
        "kid",
        "crv",
        "x",
        "use",
        "signature",
    ]
    # deterministic (Ed25519), and the DID id uses the host without port
    assert make_did_document(keys, ALICE, SERVER) == {
        **doc,
        "syftFlwrKeyVersion": version,
    }
    # keys without a version publish exactly syft-crypto's document
    assert (
        make_did_document(PrivateKeys(keys.identity, keys.signed_prekey), ALICE, SERVER)
        == doc
    )
    other = make_did_document(keys, "a.b+c@example.org", "https://SyftBox.net:8443/x")
    assert other["id"] == "did:web:syftbox.net:a.b%2Bc%40example.org"


def test_did_file_round_trip_is_atomic_write(tmp_path: Path) -> None:
    keys = generate_keys()
    path = did_path(tmp_path, ALICE)
    save_did_document(path, make_did_document(keys, ALICE, SERVER))
    assert [p.name for p in path.parent.iterdir()] == ["did.json"]  # no temp left
    bundle = load_public_bundle(path)
    assert bundle == public_bundle_of(keys, ALICE)
    assert bundle.email == ALICE
    assert load_public_bundle(path, "alice@EXAMPLE.org").email == "alice@EXAMPLE.org"
    # the local part is exact: Alice@ is another identity, not alice@
    with pytest.raises(EncryptionError, match="belongs to"):
        load_public_bundle(path, "Alice@example.org")


def test_load_public_bundle_errors(tmp_path: Path) -> None:
    keys = generate_keys()
    doc = make_did_document(keys, ALICE, SERVER)
    with pytest.raises(KeyNotFound):
        load_public_bundle(tmp_path / "missing.json")
    (tmp_path / "half.json").write_text(json.dumps(doc)[:100])  # partially synced
    with pytest.raises(EncryptionError):
        load_public_bundle(tmp_path / "half.json")
    with pytest.raises(EncryptionError, match="belongs to"):
        load_public_bundle(doc, BOB)  # alice's document passed off as bob's
    broken = json.loads(json.dumps(doc))
    del broken["keyAgreement"]
    with pytest.raises(EncryptionError):
        load_public_bundle(broken)
    broken = json.loads(json.dumps(doc))
    broken["verificationMethod"][0]["publicKeyJwk"]["x"] = "!!!"
    with pytest.raises(EncryptionError, match="base64url"):
        load_public_bundle(broken)


def test_bad_prekey_signature_is_rejected(tmp_path: Path) -> None:
    keys = generate_keys()
    doc = make_did_document(keys, ALICE, SERVER)
    jwk = doc["keyAgreement"][0]["publicKeyJwk"]

    tampered_sig = json.loads(json.dumps(doc))
    sig = bytearray(unb64u(jwk["signature"]))
    sig[0] ^= 1
    tampered_sig["keyAgreement"][0]["publicKeyJwk"]["signature"] = b64u(bytes(sig))

    swapped_spk = json.loads(json.dumps(doc))  # attacker substitutes their prekey
    evil = X25519PrivateKey.generate().public_key().public_bytes_raw()
    swapped_spk["keyAgreement"][0]["publicKeyJwk"]["x"] = b64u(evil)

    swapped_id = json.loads(json.dumps(doc))  # attacker substitutes identity key
    evil_id = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    swapped_id["verificationMethod"][0]["publicKeyJwk"]["x"] = b64u(evil_id)

    for bad in (tampered_sig, swapped_spk, swapped_id):
        with pytest.raises(BadSignatureError):
            load_public_bundle(bad)
        path = tmp_path / "did.json"
        save_did_document(path, bad)
        with pytest.raises(BadSignatureError):
            load_public_bundle(path, ALICE)


def test_public_bundle_constructor_verifies() -> None:
    keys, other = generate_keys(), generate_keys()
    good = public_bundle_of(keys, ALICE)
    with pytest.raises(BadSignatureError):
        PublicBundle(
            email=ALICE,
            identity_key=good.identity_key,
            signed_prekey=other.signed_prekey.public_key(),
            signature=good.signature,
        )
    with pytest.raises(BadSignatureError):
        PublicBundle(ALICE, good.identity_key, good.signed_prekey, b"\0" * 63)
    assert PublicBundle(ALICE, good.identity_key, good.signed_prekey, good.signature)
    assert hash(good) == hash(public_bundle_of(keys, ALICE))


def test_did_of_one_user_loads_as_bundle_for_another(tmp_path: Path) -> None:
    shared = tmp_path / "datasites"  # what sync gives bob: alice's public/ folder
    alice = Box(tmp_path / "alice", ALICE, shared)
    bob = Box(tmp_path / "bob", BOB, shared)
    alice_keys = alice.ensure()
    bob_keys = bob.ensure()
    seen_by_bob = load_public_bundle(did_path(shared, ALICE), ALICE)
    assert seen_by_bob.email == ALICE
    assert seen_by_bob == public_bundle_of(alice_keys, ALICE)
    assert fingerprint(seen_by_bob) == fingerprint(alice_keys)
    assert fingerprint(seen_by_bob) != fingerprint(bob_keys)


# ------------------------------------------------------------------------ fingerprint


def test_fingerprint_format_stable_and_distinct(tmp_path: Path) -> None:
    keys = generate_keys()
    raw = keys.identity.public_key().public_bytes_raw()
    digest = hashlib.sha256(raw).hexdigest()
    expected = " ".join(digest[i : i + 4] for i in range(0, 32, 4))
    fp = fingerprint(keys)
    assert fp == expected
    assert re.fullmatch(r"([0-9a-f]{4} ){7}[0-9a-f]{4}", fp)
    assert fingerprint(public_bundle_of(keys, ALICE)) == fp
    assert fingerprint(keys.identity.public_key()) == fp
    path = tmp_path / "k" / "pvt.jwks.json"
    save_private_keys(path, keys)
    assert fingerprint(load_private_keys(path)) == fp
    assert fingerprint(generate_keys()) != fp
    with pytest.raises(TypeError):
        fingerprint("nope")  # type: ignore[arg-type]


# ------------------------------------------------------------------------ ensure_keys


def test_ensure_keys_creates_then_is_idempotent(tmp_path: Path) -> None:
    box = Box(tmp_path, ALICE)
    assert not box.key_file.exists() and not box.did_file.exists()
    keys = box.ensure()
    assert load_private_keys(box.key_file) == keys
    assert load_public_bundle(box.did_file, ALICE) == public_bundle_of(keys, ALICE)
    if os.name != "nt":
        assert stat.S_IMODE(box.key_file.stat().st_mode) == 0o600
        assert stat.S_IMODE(box.key_file.parent.stat().st_mode) == 0o700
    before = snapshot(box.key_file, box.did_file)
    again = box.ensure()
    assert again == keys
    assert snapshot(box.key_file, box.did_file) == before


def test_ensure_keys_publishes_missing_did_from_existing_keys(tmp_path: Path) -> None:
    box = Box(tmp_path, ALICE)
    keys = generate_keys()
    save_private_keys(box.key_file, keys)
    key_bytes = box.key_file.read_bytes()
    assert box.ensure() == keys
    assert box.key_file.read_bytes() == key_bytes
    assert load_public_bundle(box.did_file, ALICE) == public_bundle_of(keys, ALICE)


def test_ensure_keys_did_without_keys_is_a_conflict(tmp_path: Path) -> None:
    box = Box(tmp_path, ALICE)
    save_did_document(box.did_file, make_did_document(generate_keys(), ALICE, SERVER))
    before = snapshot(box.did_file, box.key_file)
    with pytest.raises(KeyConflictError, match="no matching private keys") as err:
        box.ensure()
    assert "move" in str(err.value) and "Restore" in str(err.value)
    assert snapshot(box.did_file, box.key_file) == before
    assert not box.key_file.exists()


def test_ensure_keys_mismatch_is_a_conflict_and_nothing_overwritten(
    tmp_path: Path,
) -> None:
    box = Box(tmp_path, ALICE)
    box.ensure()
    # another device published different keys for the same datasite
    save_did_document(box.did_file, make_did_document(generate_keys(), ALICE, SERVER))
    before = snapshot(box.did_file, box.key_file)
    with pytest.raises(KeyConflictError, match="does not match"):
        box.ensure()
    assert snapshot(box.did_file, box.key_file) == before


def test_ensure_keys_unusable_did_is_a_conflict(tmp_path: Path) -> None:
    box = Box(tmp_path, ALICE)
    box.ensure()
    box.did_file.write_text('{"id": "did:web:x:alice%40example.org"')
    before = snapshot(box.did_file, box.key_file)
    with pytest.raises(KeyConflictError):
        box.ensure()
    assert snapshot(box.did_file, box.key_file) == before


@pytest.mark.parametrize("with_keys", [False, True])
def test_ensure_keys_did_conflict_file_is_a_conflict(
    tmp_path: Path, with_keys: bool
) -> None:
    box = Box(tmp_path, ALICE)
    if with_keys:
        box.ensure()
    conflict = box.did_file.with_name("did.conflict.json")
    conflict.parent.mkdir(parents=True, exist_ok=True)
    conflict.write_text("{}")
    before = snapshot(box.did_file, box.key_file, conflict)
    with pytest.raises(KeyConflictError, match="did.conflict.json"):
        box.ensure()
    assert snapshot(box.did_file, box.key_file, conflict) == before
    assert box.key_file.exists() is with_keys


@posix_only
def test_ensure_keys_refuses_insecure_key_file(tmp_path: Path) -> None:
    box = Box(tmp_path, ALICE)
    box.ensure()
    box.key_file.chmod(0o644)
    with pytest.raises(KeyFilePermissionError):
        box.ensure()


def test_ensure_keys_concurrent_first_use_agrees(tmp_path: Path) -> None:
    box = Box(tmp_path, ALICE)
    results: list[PrivateKeys] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def run() -> None:
        barrier.wait()
        try:
            results.append(box.ensure())
        except BaseException as exc:  # collected for the assert below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(results) == 8 and all(r == results[0] for r in results)
    assert load_private_keys(box.key_file) == results[0]
    assert load_public_bundle(box.did_file, ALICE) == public_bundle_of(
        results[0], ALICE
    )


# ------------------------------------------------------------- key version (issue 24)


def _rotated(keys: PrivateKeys, version: int) -> PrivateKeys:
    return PrivateKeys(keys.identity, X25519PrivateKey.generate(), version)


def test_key_version_signature_covers_the_version(tmp_path: Path) -> None:
    keys = _rotated(generate_keys(), 2)
    path = tmp_path / "did.json"
    save_did_document(path, make_did_document(keys, ALICE, SERVER))
    good = json.loads(path.read_text())
    assert load_public_bundle(path, ALICE).version == 2

    # the counter edited without re-signing: refused, whichever way it moves
    for forged in (3, 1, 2**53 - 1):
        doc = json.loads(json.dumps(good))
        doc["syftFlwrKeyVersion"]["version"] = forged
        with pytest.raises(BadSignatureError, match="key version"):
            load_public_bundle(doc, ALICE)

    # a newer DID's signed version copied onto an older prekey: refused (the
    # signature binds the prekey), so a rollback cannot borrow a higher version
    older = make_did_document(_rotated(keys, 1), ALICE, SERVER)
    older["syftFlwrKeyVersion"] = good["syftFlwrKeyVersion"]
    with pytest.raises(BadSignatureError, match="for this prekey"):
        load_public_bundle(older, ALICE)

    # a version signed by another identity key: refused
    doc = json.loads(json.dumps(good))
    other = PrivateKeys(Ed25519PrivateKey.generate(), keys.signed_prekey, 2)
    doc["syftFlwrKeyVersion"] = make_did_document(other, ALICE, SERVER)[
        "syftFlwrKeyVersion"
    ]
    with pytest.raises(BadSignatureError):
        load_public_bundle(doc, ALICE)


@pytest.mark.parametrize(
    "entry",
    [
        [],
        {"version": 2},
        {"version": True, "signature": "x"},
        {"version": 0, "signature": b64u(bytes(64))},
        {"version": -1, "signature": b64u(bytes(64))},
        {"version": 2**53, "signature": b64u(bytes(64))},
        {"version": 2.0, "signature": b64u(bytes(64))},
        {"version": 2, "signature": b64u(bytes(63))},
    ],
)
def test_malformed_key_version_is_refused(entry: Any) -> None:
    doc = make_did_document(generate_keys(), ALICE, SERVER)
    doc["syftFlwrKeyVersion"] = entry
    with pytest.raises(EncryptionError):
        load_public_bundle(doc, ALICE)


def test_did_without_version_is_version_0_and_stays_readable() -> None:
    keys = generate_keys()
    doc = make_did_document(keys, ALICE, SERVER)
    doc.pop("syftFlwrKeyVersion")  # what syft-crypto (or older syft_flwr) writes
    bundle = load_public_bundle(doc, ALICE)
    assert (bundle.version, bundle.version_signature) == (0, None)
    assert bundle == public_bundle_of(keys, ALICE)
    assert public_bundle_of(keys, ALICE).version == 1


def test_key_file_version_is_checked(tmp_path: Path) -> None:
    path = tmp_path / "k" / "pvt.jwks.json"
    save_private_keys(path, _rotated(generate_keys(), 7))
    assert load_private_keys(path).prekey_version == 7
    for bad in ("7", -1, True, 2**53):
        doc = json.loads(path.read_text())
        doc["prekey_version"] = bad
        path.write_text(json.dumps(doc))
        with pytest.raises(EncryptionError, match="key version"):
            load_private_keys(path)


def test_ensure_keys_republishes_the_key_file_over_an_older_did(
    tmp_path: Path,
) -> None:
    box = Box(tmp_path, ALICE)
    first = box.ensure()
    old_did = box.did_file.read_bytes()
    rotated = _rotated(first, 2)
    save_private_keys(box.key_file, rotated)
    box.ensure()  # an interrupted rotation: the DID of the key file is published
    assert load_public_bundle(box.did_file, ALICE).version == 2
    box.did_file.write_bytes(old_did)  # someone put the old one back
    assert box.ensure().prekey_version == 2
    assert load_public_bundle(box.did_file, ALICE) == public_bundle_of(rotated, ALICE)
    assert load_public_bundle(box.did_file, ALICE).version == 2
