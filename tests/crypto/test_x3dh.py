"""X3DH through the whole stack: forgeries, signed prekeys, the retired 2-DH scheme."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from syft_flwr.client import MemoryClient
from syft_flwr.config import Settings
from syft_flwr.crypto.cipher import (
    ALGORITHM,
    LEGACY_ALGORITHM,
    SealedKey,
    decrypt_chunk,
    encrypt_chunk,
    open_key,
    prekey_id,
    sign_transcript,
    transcript,
)
from syft_flwr.crypto.keys import (
    PrivateKeys,
    generate_keys,
    make_did_document,
    public_bundle_of,
)
from syft_flwr.crypto.policy import (
    X3DHCodec,
    default_policy,
    did_key,
    load_or_create_keys,
)
from syft_flwr.errors import BadSignatureError, DecryptionError, KeyNotFound
from syft_flwr.transports.memory import MemoryHub
from syft_flwr.wire.envelope import BodyCodec, Head, SealContext, parse_head
from syft_flwr.wire.mailbox import SyftFlwrRpc

DS, DO = "ds@example.org", "do@example.org"
APP, EP = "flwr/x3dh", "messages"
SMALL = Settings(chunk_size=64 * 1024, inline_limit=1024)


class _OneCodec:
    """A CodecPolicy that seals every message with one given codec."""

    required = True

    def __init__(self, codec: BodyCodec) -> None:
        self.codec = codec

    def for_sending(self, ctx: SealContext) -> BodyCodec:
        return self.codec

    def for_receiving(self, ctx: SealContext, head: Head) -> BodyCodec:
        raise AssertionError("not used")


class _Forger(BodyCodec):
    """Mallory holds all of DO's private keys, not DS's identity key.

    X3DH alone cannot stop her (she computes DS's message key from DO's side);
    she signs with her own key, the only identity key she has.
    """

    overhead = 16

    def __init__(
        self,
        do_keys: PrivateKeys,
        ds_public: Any,
        sign: Callable[[Any, bytes], bytes] | None,
        seen: list[bytes],
    ) -> None:
        self.do_keys, self.ds_public, self.sign, self.seen = (
            do_keys,
            ds_public,
            sign,
            seen,
        )

    def seal(
        self, ctx: SealContext, parts: Sequence[memoryview]
    ) -> tuple[dict[str, Any] | None, list[bytes]]:
        ek = X25519PrivateKey.generate().public_key().public_bytes_raw()
        sealed = SealedKey(ek, prekey_id(self.do_keys.signed_prekey.public_key()))
        key = open_key(self.do_keys, self.ds_public, sealed)  # the recipient's view
        self.seen.append(key)
        mctx = X3DHCodec._mctx(
            ctx,
            len(parts),
            self.ds_public.identity_key.public_bytes_raw(),
            self.do_keys.identity.public_key().public_bytes_raw(),
        )
        stored = [encrypt_chunk(key, mctx, i, p) for i, p in enumerate(parts)]
        header = {
            "alg": ALGORITHM,
            "ek": base64.b64encode(ek).decode(),
            "spk": sealed.prekey,
        }
        if self.sign is not None:
            sig = self.sign(generate_keys().identity, transcript(mctx, sealed, stored))
            header["sig"] = base64.b64encode(sig).decode()
        return header, stored

    def open(self, *args: Any) -> bytes:  # type: ignore[override]
        raise AssertionError("mallory only writes")


@pytest.fixture
def net():
    hub = MemoryHub()
    ds, do = MemoryClient(DS, hub), MemoryClient(DO, hub)
    t_ds, t_do = ds.make_transport(), do.make_transport()
    pol_ds, pol_do = default_policy(ds, t_ds, SMALL), default_policy(do, t_do, SMALL)
    return hub, (ds, t_ds, pol_ds), (do, t_do, pol_do)


def _read(t, pol, key: str):
    return SyftFlwrRpc(t, APP, settings=SMALL, policy=pol).read(key)


def test_genuine_message_round_trip_names_the_prekey(net) -> None:
    hub, (ds, t_ds, pol_ds), (do, t_do, pol_do) = net
    rpc = SyftFlwrRpc(t_ds, APP, settings=SMALL, policy=pol_ds)
    mid = rpc.send_request(DO, EP, b"x" * 5000, expires_at=time.time() + 60)
    key = rpc.head_key(DO, EP, DS, mid, "request")
    enc = parse_head(hub.snapshot()[key]).encryption
    assert enc is not None and enc["alg"] == ALGORITHM
    assert enc["spk"] == prekey_id(pol_do.keys.signed_prekey.public_key())
    assert len(base64.b64decode(enc["sig"])) == 64
    assert _read(t_do, pol_do, key).body == b"x" * 5000


@pytest.mark.parametrize("signed", [True, False], ids=["own-signature", "no-signature"])
def test_forgery_by_holder_of_recipients_keys_is_refused(net, signed: bool) -> None:
    hub, (ds, t_ds, pol_ds), (do, t_do, pol_do) = net
    do_keys = load_or_create_keys(do, t_do)  # stolen by mallory
    load_or_create_keys(ds, t_ds)
    ds_public = pol_ds.directory.fetch(DS)
    seen: list[bytes] = []
    forger = _Forger(do_keys, ds_public, sign_transcript if signed else None, seen)
    # she writes as DS (a compromised sync server can put any file anywhere)
    rpc = SyftFlwrRpc(t_ds, APP, settings=SMALL, policy=_OneCodec(forger))
    mid = rpc.send_request(DO, EP, b"poisoned model", expires_at=time.time() + 60)
    key = rpc.head_key(DO, EP, DS, mid, "request")
    with pytest.raises(DecryptionError, match="not signed|bad encryption header"):
        _read(t_do, pol_do, key)
    # the attack is real: without the signature the ciphertext would open
    head = parse_head(hub.snapshot()[key])
    ctx = X3DHCodec._mctx(
        SealContext(mid, DS, DO, APP, EP, "request", head.expires, head.signed_fields),
        1,
        ds_public.identity_key.public_bytes_raw(),
        do_keys.identity.public_key().public_bytes_raw(),
    )
    assert decrypt_chunk(seen[0], ctx, 0, head.inline_body) == b"poisoned model"


def test_bad_prekey_signature_is_refused_before_sealing(net) -> None:
    hub, (ds, t_ds, pol_ds), (do, t_do, pol_do) = net
    do_keys = load_or_create_keys(do, t_do)
    doc = make_did_document(do_keys, DO, "https://syftbox.local/")
    other = make_did_document(generate_keys(), DO, "https://syftbox.local/")
    # same identity key, another prekey (with a signature by another key)
    doc["keyAgreement"] = other["keyAgreement"]
    t_do.put(did_key(DO), json.dumps(doc).encode())
    rpc = SyftFlwrRpc(t_ds, APP, settings=SMALL, policy=pol_ds)
    with pytest.raises(BadSignatureError):
        rpc.send_request(DO, EP, b"model", expires_at=time.time() + 60)
    assert not [k for k in hub.snapshot() if k.endswith(".request")]


def test_message_of_the_retired_2dh_scheme_is_refused_clearly(net) -> None:
    hub, (ds, t_ds, pol_ds), (do, t_do, pol_do) = net
    load_or_create_keys(do, t_do)

    class _Legacy(X3DHCodec):
        def seal(self, ctx, parts):  # type: ignore[no-untyped-def]
            header, stored = super().seal(ctx, parts)
            assert header is not None
            return {"alg": LEGACY_ALGORITHM, "ek": header["ek"]}, stored

    codec = _Legacy(pol_ds.keys, pol_ds.directory.get(DO))
    rpc = SyftFlwrRpc(t_ds, APP, settings=SMALL, policy=_OneCodec(codec))
    mid = rpc.send_request(DO, EP, b"old", expires_at=time.time() + 60)
    with pytest.raises(DecryptionError, match="retired 2-DH scheme"):
        _read(t_do, pol_do, rpc.head_key(DO, EP, DS, mid, "request"))


def test_unknown_prekey_id_is_refused(net) -> None:
    hub, (ds, t_ds, pol_ds), (do, t_do, pol_do) = net
    do_keys = load_or_create_keys(do, t_do)
    stranger = generate_keys()
    # sealed to a prekey DO never had (signed by DO's identity key, say a stale DID)
    fake = PrivateKeys(do_keys.identity, stranger.signed_prekey)
    codec = X3DHCodec(pol_ds.keys, public_bundle_of(fake, DO))
    rpc = SyftFlwrRpc(t_ds, APP, settings=SMALL, policy=_OneCodec(codec))
    mid = rpc.send_request(DO, EP, b"x", expires_at=time.time() + 60)
    with pytest.raises(DecryptionError, match="prekey"):
        _read(t_do, pol_do, rpc.head_key(DO, EP, DS, mid, "request"))


def test_missing_peer_keys_is_key_not_found(net) -> None:
    hub, (ds, t_ds, pol_ds), _ = net
    with pytest.raises(KeyNotFound):
        pol_ds.for_sending(
            SealContext("m", DS, "nobody@example.org", APP, EP, "request", "t")
        )
