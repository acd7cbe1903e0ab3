"""Encryption through the whole stack: envelope + rpc + events + grid, on real transports."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from syft_core import Client, SyftClientConfig

from syft_flwr.client import MemoryClient, SyftCoreClient
from syft_flwr.config import Settings
from syft_flwr.crypto.keys import (
    generate_keys,
    make_did_document,
    private_key_path,
)
from syft_flwr.crypto.policy import (
    EncryptionPolicy,
    KeyDirectory,
    default_policy,
    did_key,
    load_or_create_keys,
)
from syft_flwr.errors import (
    BadSignatureError,
    ChunkIntegrityError,
    DecryptionError,
    EnvelopeError,
    KeyFilePermissionError,
    KeyNotFound,
    PlaintextRefused,
)
from syft_flwr.events import create_events_watcher
from syft_flwr.researcher.grid import SyftGrid
from syft_flwr.serde import bytes_to_flower_message, flower_message_to_bytes
from syft_flwr.transports.memory import MemoryHub
from syft_flwr.wire.envelope import chunk_name, parse_head
from syft_flwr.wire.mailbox import PlaintextPolicy, SyftFlwrRpc

APP = "flwr/enc"
EP = "messages"
DS, DO, EVE = "ds@example.org", "do@example.org", "eve@example.org"
SMALL = Settings(chunk_size=64 * 1024, inline_limit=1024)


def _memory_parties(hub: MemoryHub, *emails: str):
    out = {}
    for e in emails:
        c = MemoryClient(e, hub)
        t = c.make_transport()
        out[e] = (c, t, default_policy(c, t, SMALL))
    return out


@pytest.fixture
def mem():
    hub = MemoryHub()
    return hub, _memory_parties(hub, DS, DO, EVE)


def _rpc(parties, email) -> SyftFlwrRpc:
    _, t, pol = parties[email]
    return SyftFlwrRpc(t, APP, settings=SMALL, policy=pol)


def _send(parties, body: bytes, *, sender=DS, to=DO) -> tuple[SyftFlwrRpc, str, str]:
    rpc = _rpc(parties, sender)
    mid = rpc.send_request(to, EP, body, expires_at=time.time() + 600)
    key = rpc.head_key(to, EP, sender, mid, "request")
    return rpc, mid, key


def test_round_trip_encrypted_and_on_disk_is_ciphertext(mem):
    hub, parties = mem
    body = bytes(range(256)) * 1000  # 256 KB -> several chunks
    _, mid, key = _send(parties, body)
    head = parse_head(hub.snapshot()[key])
    assert head.encrypted and head.storage == "chunks" and len(head.chunks) >= 4
    stored = b"".join(
        hub.snapshot()[key.rsplit("/", 1)[0] + "/" + chunk_name(mid, "request", i)]
        for i in range(len(head.chunks))
    )
    assert body[:4096] not in stored  # nothing of the plaintext shows
    got = _rpc(parties, DO).read(key)
    assert got.body == body


def _tamper_chunk(hub: MemoryHub, writer, key: str, mid: str, index: int, fn) -> None:
    folder = key.rsplit("/", 1)[0]
    name = f"{folder}/{chunk_name(mid, 'request', index)}"
    data = fn(hub.snapshot()[name])
    writer.put(name, data)
    # keep the manifest consistent so only the cipher can catch it
    head = json.loads(hub.snapshot()[key])
    import hashlib

    head["syft_flwr"]["chunks"][index] = {
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    writer.put(key, json.dumps(head).encode())


@pytest.mark.parametrize("where", ["ciphertext", "tag", "truncate"])
def test_tampered_chunk_is_refused(mem, where):
    hub, parties = mem
    _, mid, key = _send(parties, b"x" * 200_000)
    writer = parties[DS][1]

    def bad(b: bytes) -> bytes:
        if where == "ciphertext":
            return bytes([b[0] ^ 1]) + b[1:]
        if where == "tag":
            return b[:-1] + bytes([b[-1] ^ 1])
        return b[:-17]

    _tamper_chunk(hub, writer, key, mid, 1, bad)
    # A truncated middle chunk no longer adds up: the strict head reader refuses
    # it before any decryption; bit flips are caught by the cipher.
    expected = EnvelopeError if where == "truncate" else DecryptionError
    with pytest.raises(expected):
        _rpc(parties, DO).read(key)


def test_swapped_duplicated_and_missing_chunks_are_refused(mem):
    hub, parties = mem
    rpc, mid, key = _send(parties, b"a" * 70_000 + b"b" * 70_000 + b"c" * 70_000)
    folder = key.rsplit("/", 1)[0]
    snap = hub.snapshot()
    c0, c1 = (
        snap[f"{folder}/{chunk_name(mid, 'request', 0)}"],
        snap[f"{folder}/{chunk_name(mid, 'request', 1)}"],
    )
    head = json.loads(snap[key])
    writer = parties[DS][1]

    # swap chunks 0 and 1 (manifest swapped too, so integrity checks pass)
    writer.put(f"{folder}/{chunk_name(mid, 'request', 0)}", c1)
    writer.put(f"{folder}/{chunk_name(mid, 'request', 1)}", c0)
    h = json.loads(json.dumps(head))
    h["syft_flwr"]["chunks"][0], h["syft_flwr"]["chunks"][1] = (
        head["syft_flwr"]["chunks"][1],
        head["syft_flwr"]["chunks"][0],
    )
    writer.put(key, json.dumps(h).encode())
    with pytest.raises(DecryptionError):
        _rpc(parties, DO).read(key)

    # duplicate chunk 0 in place of chunk 1
    writer.put(f"{folder}/{chunk_name(mid, 'request', 0)}", c0)
    writer.put(f"{folder}/{chunk_name(mid, 'request', 1)}", c0)
    h = json.loads(json.dumps(head))
    h["syft_flwr"]["chunks"][1] = head["syft_flwr"]["chunks"][0]
    writer.put(key, json.dumps(h).encode())
    with pytest.raises(DecryptionError):
        _rpc(parties, DO).read(key)

    # drop the last chunk from the manifest (truncation)
    h = json.loads(json.dumps(head))
    h["syft_flwr"]["chunks"] = head["syft_flwr"]["chunks"][:-1]
    h["syft_flwr"]["size"] = 140_000
    writer.put(f"{folder}/{chunk_name(mid, 'request', 1)}", c1)
    writer.put(key, json.dumps(h).encode())
    with pytest.raises(ChunkIntegrityError):  # sizes no longer add up
        _rpc(parties, DO).read(key)
    # ...and with a size that does add up, the cipher refuses (chunk count in AAD)
    h["syft_flwr"]["size"] = sum(
        c["size"] for c in h["syft_flwr"]["chunks"]
    ) - 16 * len(h["syft_flwr"]["chunks"])
    writer.put(key, json.dumps(h).encode())
    with pytest.raises(DecryptionError):
        _rpc(parties, DO).read(key)


def test_tampered_header_fields_are_refused(mem):
    hub, parties = mem
    _, mid, key = _send(parties, b"secret model update")
    writer = parties[DS][1]
    orig = json.loads(hub.snapshot()[key])
    for mutate in (
        lambda h: h.__setitem__("expires", "2099-01-01T00:00:00+00:00"),
        lambda h: h["syft_flwr"]["encryption"].__setitem__("ek", "A" * 43 + "="),
    ):
        h = json.loads(json.dumps(orig))
        mutate(h)
        writer.put(key, json.dumps(h).encode())
        with pytest.raises(DecryptionError):
            _rpc(parties, DO).read(key)


def test_cut_and_paste_into_another_message_fails(mem):
    hub, parties = mem
    _, mid1, key1 = _send(parties, b"first")
    _, mid2, key2 = _send(parties, b"second")
    h1 = json.loads(hub.snapshot()[key1])
    h2 = json.loads(hub.snapshot()[key2])
    h2["body"], h2["syft_flwr"] = h1["body"], h1["syft_flwr"]
    parties[DS][1].put(key2, json.dumps(h2).encode())
    with pytest.raises(DecryptionError):
        _rpc(parties, DO).read(key2)


def test_wrong_recipient_cannot_read(mem):
    hub, parties = mem
    _, mid, key = _send(parties, b"for do only")
    # Eve copies the request into her own inbox, claiming it was sent to her.
    eve_key = key.replace(DO, EVE, 1)
    parties[EVE][1].put(eve_key, hub.snapshot()[key])
    with pytest.raises(DecryptionError):
        _rpc(parties, EVE).read(eve_key)


def test_forged_sender_is_refused(mem):
    """Eve writes a request into DS's folder at DO, encrypted with her own keys."""
    hub, parties = mem
    _, t_eve, pol_eve = parties[EVE]
    # Eve pretends to be DS: her transport identity says ds@, but her keys are hers.
    eve_as_ds = SyftFlwrRpc(t_eve, APP, settings=SMALL, policy=pol_eve)
    eve_as_ds.transport.identity = DS
    mid = eve_as_ds.send_request(DO, EP, b"evil", expires_at=time.time() + 60)
    key = eve_as_ds.head_key(DO, EP, DS, mid, "request")
    with pytest.raises(DecryptionError):
        _rpc(parties, DO).read(key)


def test_plaintext_refused_while_encryption_on(mem):
    hub, parties = mem
    plain = SyftFlwrRpc(parties[DS][1], APP, settings=SMALL, policy=PlaintextPolicy())
    mid = plain.send_request(DO, EP, b"hello", expires_at=time.time() + 60)
    with pytest.raises(PlaintextRefused):
        _rpc(parties, DO).read(plain.head_key(DO, EP, DS, mid, "request"))


def test_missing_did_is_key_not_found():
    hub = MemoryHub()
    c = MemoryClient(DS, hub)
    t = c.make_transport()
    pol = default_policy(c, t, SMALL)
    rpc = SyftFlwrRpc(t, APP, settings=SMALL, policy=pol)
    with pytest.raises(KeyNotFound, match="nobody@example.org"):
        rpc.send_request("nobody@example.org", EP, b"x", expires_at=time.time() + 60)


def test_bad_prekey_signature_is_refused(mem):
    hub, parties = mem
    keys_a, keys_b = generate_keys(), generate_keys()
    doc = make_did_document(keys_a, DO, "https://x.example.org/")
    forged = make_did_document(keys_b, DO, "https://x.example.org/")
    # keep DO's identity key but swap in another prekey+signature
    doc["keyAgreement"][0]["publicKeyJwk"]["x"] = forged["keyAgreement"][0][
        "publicKeyJwk"
    ]["x"]
    parties[DO][1].put(did_key(DO), json.dumps(doc).encode())
    directory = KeyDirectory(parties[DS][1])
    with pytest.raises(BadSignatureError):
        directory.get(DO)


def _core_client(tmp: Path, email: str) -> SyftCoreClient:
    cfg = SyftClientConfig(
        path=tmp / f"{email}.json",
        data_dir=tmp / "SyftBox",
        email=email,
        server_url="http://127.0.0.1:9",
    )
    cfg.save()
    return SyftCoreClient(Client(cfg))


def test_syftbox_keys_in_syft_crypto_location_with_0600(tmp_path):
    c = _core_client(tmp_path, DS)
    load_or_create_keys(c, c.make_transport())
    path = private_key_path(c.data_dir, c.server_url, c.email)
    assert path.is_file() and (path.stat().st_mode & 0o777) == 0o600
    assert (c.datasites / DS / "public" / "did.json").is_file()
    path.chmod(0o644)
    with pytest.raises(KeyFilePermissionError):
        load_or_create_keys(c, c.make_transport())


def _serve(events):
    th = threading.Thread(target=events.run_forever, daemon=True)
    th.start()
    return th


def test_grid_round_trip_encrypted_over_syftbox_folders_and_replay_after_restart(
    tmp_path,
):
    ds, do = _core_client(tmp_path, DS), _core_client(tmp_path, DO)
    calls: list[int] = []

    def handler(body: bytes) -> bytes:
        msg = bytes_to_flower_message(body)
        calls.append(1)
        arr = msg.content["arrays"].to_numpy_ndarrays()[0]
        reply = Message(RecordDict({"arrays": ArrayRecord([arr * 2])}), reply_to=msg)
        return flower_message_to_bytes(reply)

    ev = create_events_watcher(APP, client=do, poll_interval=0.5, allowed_senders=[DS])
    ev.on_request("/messages", handler)
    th = _serve(ev)
    grid = SyftGrid(APP, [DO], client=ds, settings=Settings(chunk_size=1 << 20))
    grid.set_run(7)
    arr = np.arange(600_000, dtype=np.float32)  # 2.4 MB -> chunked, encrypted
    msg = grid.create_message(
        RecordDict({"arrays": ArrayRecord([arr])}),
        MessageType.TRAIN,
        grid.get_node_ids()[0],
        "g",
    )
    (reply,) = grid.send_and_receive([msg], timeout=30)
    np.testing.assert_array_equal(
        reply.content["arrays"].to_numpy_ndarrays()[0], arr * 2
    )
    assert calls == [1]

    # Replay: DS's request file is put back (as an attacker or a stale sync would).
    rpc = grid.rpc
    mid = rpc.send_request(DO, EP, b"not even flower", expires_at=time.time() + 60)
    resp_key = rpc.head_key(DO, EP, DS, mid, "response")
    deadline = time.time() + 10
    while not rpc.transport.exists(resp_key) and time.time() < deadline:
        time.sleep(0.05)
    assert rpc.transport.exists(resp_key)
    ev.stop()
    th.join(timeout=2)
    assert not th.is_alive()
    n_before = len(calls)

    # Restart the data owner; re-post an already executed id: it is not run
    # again, and gets the reply it got the first time (kept in the ledger).
    req_key = rpc.head_key(DO, EP, DS, mid, "request")
    saved = rpc.transport.get(req_key)
    rpc.transport.delete(resp_key)
    ev2 = create_events_watcher(APP, client=do, poll_interval=0.5, allowed_senders=[DS])
    ev2.on_request("/messages", handler)
    rpc.transport.put(req_key, saved)
    th2 = _serve(ev2)
    deadline = time.time() + 10
    while not rpc.transport.exists(resp_key) and time.time() < deadline:
        time.sleep(0.05)
    ev2.stop()
    th2.join(timeout=2)
    head = parse_head(rpc.transport.get(resp_key))
    assert head.status_code == 500  # the handler raised on these bytes the first time
    assert len(calls) == n_before


def test_encryption_off_on_both_sides_works_and_mismatch_is_clear(tmp_path):
    hub = MemoryHub()
    ds, do = MemoryClient(DS, hub), MemoryClient(DO, hub)
    off = Settings(encryption_enabled=False)
    ev = create_events_watcher(APP, client=do, settings=off)

    def reply(body: bytes) -> bytes:
        msg = bytes_to_flower_message(body)
        return flower_message_to_bytes(Message(msg.content, reply_to=msg))

    ev.on_request("/messages", reply)
    th = _serve(ev)
    grid = SyftGrid(APP, [DO], client=ds, settings=off)
    grid.set_run(1)
    m = grid.create_message(
        RecordDict({"c": ConfigRecord({"x": 1})}),
        MessageType.QUERY,
        grid.get_node_ids()[0],
        "",
    )
    (r,) = grid.send_and_receive([m], timeout=10)
    assert not r.has_error() and r.content["c"]["x"] == 1
    # An encrypting researcher never sends in clear to a data owner without keys:
    # the request waits unwritten and is withdrawn at the timeout.
    grid2 = SyftGrid(APP, [DO], client=MemoryClient(DS, hub), settings=Settings())
    grid2.set_run(2)
    m2 = grid2.create_message(
        RecordDict({"c": ConfigRecord({"x": 2})}),
        MessageType.QUERY,
        grid2.get_node_ids()[0],
        "",
    )
    assert grid2.send_and_receive([m2], timeout=1.0) == []
    assert not [k for k in hub.snapshot() if k.endswith(".request")]
    with pytest.raises(KeyNotFound):
        EncryptionPolicy(
            DS, generate_keys(), KeyDirectory(grid2.transport)
        ).for_sending(
            type("C", (), {"recipient": DO})()  # type: ignore[arg-type]
        )
    ev.stop()
    th.join(timeout=2)
