"""Prekey rotation: grace period, destruction, the forward-secrecy window (fake clock)."""

from __future__ import annotations

import base64
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _support import make_syft_client

from syft_flwr.client import MemoryClient
from syft_flwr.config import Settings
from syft_flwr.crypto.cipher import prekey_id
from syft_flwr.crypto.identity import rotate_prekey, show_keys
from syft_flwr.crypto.keys import (
    PrivateKeys,
    did_path,
    fingerprint,
    load_public_bundle,
    private_key_path,
)
from syft_flwr.crypto.policy import (
    default_policy,
    load_keys,
    load_or_create_keys,
    save_keys,
)
from syft_flwr.crypto.prekeys import PREKEYS_FILE
from syft_flwr.crypto.store import key_store_for
from syft_flwr.crypto.trust import TrustStore
from syft_flwr.errors import DecryptionError, KeyRollbackError
from syft_flwr.transports.memory import MemoryHub
from syft_flwr.wire.mailbox import SyftFlwrRpc

DS, DO = "ds@example.org", "do@example.org"
APP, EP = "flwr/rot", "messages"
SMALL = Settings(chunk_size=64 * 1024, inline_limit=1024)
DAY = 86400.0
T0 = 1_900_000_000.0


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _raw(keys: PrivateKeys) -> bytes:
    return keys.signed_prekey.private_bytes_raw()


def _send(client, body: bytes) -> tuple[SyftFlwrRpc, str]:
    t = client.make_transport()
    rpc = SyftFlwrRpc(t, APP, settings=SMALL, policy=default_policy(client, t, SMALL))
    mid = rpc.send_request(DO, EP, body, expires_at=time.time() + 600)
    return rpc, rpc.head_key(DO, EP, DS, mid, "request")


def _reader(client, clock: Clock) -> SyftFlwrRpc:
    t = client.make_transport()
    pol = default_policy(client, t, SMALL, clock=clock)
    return SyftFlwrRpc(t, APP, settings=SMALL, policy=pol)


def test_forward_secrecy_window_memory() -> None:
    hub = MemoryHub()
    ds, do = MemoryClient(DS, hub), MemoryClient(DO, hub)
    clock = Clock()
    reader = _reader(do, clock)
    old_keys = load_keys(do)
    _, captured = _send(ds, b"round 1 model")  # an eavesdropper keeps a copy
    assert reader.read(captured).body == b"round 1 model"

    clock.now = T0 + 60
    rot = rotate_prekey(do, grace=7 * DAY, clock=clock)
    assert rot.retired.id == prekey_id(old_keys.signed_prekey.public_key())
    assert rot.retired.destroy_after == T0 + 60 + 7 * DAY
    assert rot.fingerprint == fingerprint(old_keys)  # identity unchanged

    # the peer picks up the new prekey without a TOFU prompt (same identity)
    _, fresh = _send(ds, b"round 2 model")
    head = json.loads(hub.snapshot()[fresh])
    assert head["syft_flwr"]["encryption"]["spk"] == rot.new_prekey

    clock.now = T0 + 6 * DAY  # inside the grace period: both open
    assert reader.read(captured).body == b"round 1 model"
    assert reader.read(fresh).body == b"round 2 model"

    clock.now = T0 + 60 + 7 * DAY + 1  # grace over: the old prekey is destroyed
    with pytest.raises(DecryptionError, match="destroyed"):
        reader.read(captured)
    assert reader.read(fresh).body == b"round 2 model"

    # whoever steals all of DO's private state now cannot open the capture
    stolen = json.dumps(hub.private_state(DO), default=repr)
    old_d = base64.urlsafe_b64encode(old_keys.signed_prekey.private_bytes_raw())
    assert old_d.decode().rstrip("=") not in stolen
    assert key_store_for(do).read_json(PREKEYS_FILE) is None
    stolen_keys = load_keys(do)
    assert _raw(stolen_keys) != _raw(old_keys)
    with pytest.raises(DecryptionError):
        _reader(do, clock).read(captured)


def test_rotation_on_syftbox_files(tmp_path: Path) -> None:
    ds, do = make_syft_client(tmp_path, DS), make_syft_client(tmp_path, DO)
    old = load_or_create_keys(do, do.make_transport())
    clock = Clock()
    _, captured = _send(ds, b"before")
    rot = rotate_prekey(do, grace=3600, clock=clock)
    key_file = private_key_path(do.data_dir, do.server_url, DO)
    new = load_keys(do)
    assert fingerprint(new) == fingerprint(old)
    assert _raw(new) != _raw(old)
    assert key_file.stat().st_mode & 0o777 == 0o600
    did = load_public_bundle(did_path(do.datasites, DO), DO)
    assert prekey_id(did.signed_prekey) == rot.new_prekey
    assert fingerprint(did) == fingerprint(old)
    archive = key_store_for(do).path(PREKEYS_FILE)  # type: ignore[attr-defined]
    assert archive.stat().st_mode & 0o777 == 0o600
    assert rot.retired.id in archive.read_text()

    assert _reader(do, clock).read(captured).body == b"before"
    clock.now = T0 + 3601
    show_keys(do, clock=clock)  # any use after the deadline destroys it
    assert not archive.exists()
    with pytest.raises(DecryptionError, match="destroyed"):
        _reader(do, clock).read(captured)
    # restarting still works: keys and DID agree (no KeyConflictError)
    assert load_or_create_keys(do, do.make_transport()) == new


def test_interrupted_rotation_is_repaired_at_next_start(tmp_path: Path) -> None:
    do = make_syft_client(tmp_path, DO)
    old = load_or_create_keys(do, do.make_transport())
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from syft_flwr.crypto.policy import save_keys

    new = PrivateKeys(old.identity, X25519PrivateKey.generate())
    save_keys(do, new)  # crash before the DID was published
    assert load_or_create_keys(do, do.make_transport()) == new
    did = load_public_bundle(did_path(do.datasites, DO), DO)
    assert did.signed_prekey.public_bytes_raw() == (
        new.signed_prekey.public_key().public_bytes_raw()
    )


def test_grace_precedence_argument_over_env() -> None:
    hub = MemoryHub()
    do = MemoryClient(DO, hub)
    clock = Clock()
    env = Settings.from_env({"SYFT_FLWR_PREKEY_GRACE": "2h"})
    assert env.prekey_grace == 7200
    assert Settings.from_env({}).prekey_grace == 7 * DAY
    r1 = rotate_prekey(do, settings=env, clock=clock)
    assert r1.retired.destroy_after == T0 + 7200
    r2 = rotate_prekey(do, grace=60, settings=env, clock=clock)
    assert r2.retired.destroy_after == T0 + 60


def test_cli_rotate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from syft_flwr.cli import main

    do = make_syft_client(tmp_path, DO)
    old = load_or_create_keys(do, do.make_transport())
    with pytest.raises(SystemExit) as exc:
        main(["keys", "rotate", "--grace", "1d", "--config", str(do.config_path)])
    out = capsys.readouterr().out
    assert exc.value.code == 0
    new = load_keys(do)
    assert prekey_id(new.signed_prekey.public_key()) in out
    assert prekey_id(old.signed_prekey.public_key()) in out
    assert fingerprint(old) in out


# ----------------------------------------------------------- DID rollback (issue 24)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m syft_flwr ...`` in its own OS process, as a user runs it."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SYFT_FLWR_", "SYFTBOX_"))
    }
    return subprocess.run(
        [sys.executable, "-m", "syft_flwr", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def _inbox(client, sender: str) -> list[Path]:
    return sorted(
        p for p in (client.datasites / DO / "app_data").rglob("*") if p.is_file()
    )


def test_old_did_put_back_after_rotation_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ds, do = make_syft_client(tmp_path, DS), make_syft_client(tmp_path, DO)
    load_or_create_keys(do, do.make_transport())
    did_file = did_path(do.datasites, DO)
    old_did = did_file.read_bytes()
    _send(ds, b"round 1")  # DS pins DO at key version 1
    assert TrustStore(key_store_for(ds), load_keys(ds)).pinned(DO).version == 1

    rotated = _cli("keys", "rotate", "--grace", "0", "--config", str(do.config_path))
    assert rotated.returncode == 0, rotated.stderr
    assert load_public_bundle(did_file, DO).version == 2
    _, fresh = _send(ds, b"round 2")  # DS sees the rotation: pins version 2
    assert TrustStore(key_store_for(ds), load_keys(ds)).pinned(DO).version == 2

    # the attack: the old, genuinely signed did.json is put back
    did_file.write_bytes(old_did)
    sent_before = _inbox(ds, DO)
    caplog.set_level(logging.WARNING, logger="syft_flwr.crypto")
    with pytest.raises(KeyRollbackError) as err:
        _send(ds, b"round 3 model")
    msg = str(err.value)
    assert msg.startswith(
        f"{DO}'s published keys are older than the ones you already saw "
        "(version 1 < 2): someone may have put back an old key file"
    )
    assert "publish their current keys again" in msg
    assert (err.value.pinned, err.value.published) == (2, 1)
    assert any(
        "refused the published keys of" in r.getMessage() and "1 < 2" in r.getMessage()
        for r in caplog.records
    )
    assert _inbox(ds, DO) == sent_before  # nothing was sealed to the destroyed key
    assert TrustStore(key_store_for(ds), load_keys(ds)).pinned(DO).version == 2

    # what the researcher sees, from its own process
    shown = _cli("keys", "show", DO, "--config", str(ds.config_path))
    assert shown.returncode == 0, shown.stderr
    assert f"{DO}  [older]" in shown.stdout and "REFUSED" in shown.stdout

    # the same DID with its version removed is refused as well
    stripped = json.loads(old_did)
    stripped.pop("syftFlwrKeyVersion")
    did_file.write_text(json.dumps(stripped))
    with pytest.raises(KeyRollbackError, match=r"\(no version < 2\)"):
        _send(ds, b"round 3 model")

    # DO starts again: its key file wins, the current DID is published again,
    # and the real exchange goes through
    assert load_or_create_keys(do, do.make_transport()) == load_keys(do)
    assert load_public_bundle(did_file, DO).version == 2
    _, ok = _send(ds, b"round 3 model")
    assert _reader(do, Clock(time.time())).read(ok).body == b"round 3 model"


def test_rotation_counts_up_from_the_published_version_memory() -> None:
    hub = MemoryHub()
    ds, do = MemoryClient(DS, hub), MemoryClient(DO, hub)
    assert load_or_create_keys(do, do.make_transport()).prekey_version == 1
    _send(ds, b"pin")
    for expected in (2, 3):
        rotate_prekey(do, grace=60, clock=Clock())
        assert load_keys(do).prekey_version == expected
        _send(ds, b"again")
        pin = TrustStore(key_store_for(ds), load_keys(ds)).pinned(DO)
        assert pin is not None and pin.version == expected
    # a key file restored from an older backup still publishes past what peers saw
    restored = load_keys(do)
    save_keys(do, PrivateKeys(restored.identity, restored.signed_prekey, 1))
    rotate_prekey(do, grace=60, clock=Clock())
    assert load_keys(do).prekey_version == 4
    _send(ds, b"after restore")  # accepted: 4 > 3


def test_key_file_older_than_published_did_moves_past_it(tmp_path: Path) -> None:
    # a key file restored from a backup taken before a rotation (same identity)
    do = make_syft_client(tmp_path, DO)
    first = load_or_create_keys(do, do.make_transport())
    backup = private_key_path(do.data_dir, do.server_url, DO).read_bytes()
    rotate_prekey(do, grace=60, clock=Clock())
    rotate_prekey(do, grace=60, clock=Clock())
    assert load_public_bundle(did_path(do.datasites, DO), DO).version == 3
    private_key_path(do.data_dir, do.server_url, DO).write_bytes(backup)

    keys = load_or_create_keys(do, do.make_transport())
    assert keys == first and keys.prekey_version == 4  # not 1: peers pinned 3
    assert load_keys(do).prekey_version == 4  # durable in the key file
    did = load_public_bundle(did_path(do.datasites, DO), DO)
    assert did.version == 4
    assert did.signed_prekey.public_bytes_raw() == (
        first.signed_prekey.public_key().public_bytes_raw()
    )
