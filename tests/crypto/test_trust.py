"""Trust on first use: pinned identity keys, changed DIDs refused, `keys trust/show`."""

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

from syft_flwr.cli import main
from syft_flwr.client import MemoryClient
from syft_flwr.config import Settings
from syft_flwr.crypto.identity import rotate_prekey, show_keys, trust_peer
from syft_flwr.crypto.keys import (
    fingerprint,
    fingerprint_digits,
    fingerprint_matches,
    generate_keys,
    make_did_document,
)
from syft_flwr.crypto.policy import (
    default_policy,
    did_key,
    load_keys,
    load_or_create_keys,
)
from syft_flwr.crypto.store import FileKeyStore, key_store_for
from syft_flwr.crypto.trust import PEERS_FILE, TrustStore
from syft_flwr.errors import (
    ConfigError,
    EncryptionError,
    KeyRollbackError,
    PeerKeyChangedError,
    StateIntegrityError,
)
from syft_flwr.transports.memory import MemoryHub
from syft_flwr.wire.mailbox import SyftFlwrRpc

DS, DO = "ds@example.org", "do@example.org"
APP, EP = "flwr/tofu", "messages"
SMALL = Settings(chunk_size=64 * 1024, inline_limit=1024)


def _replace_did(transport, email: str) -> str:
    """What a compromised sync server or Drive editor does; returns the new fp."""
    evil = generate_keys()
    doc = make_did_document(evil, email, "https://syftbox.local/")
    transport.put(did_key(email), json.dumps(doc).encode())
    return fingerprint(evil)


def test_replaced_did_is_refused_naming_both_fingerprints_until_trusted() -> None:
    hub = MemoryHub()
    ds, do = MemoryClient(DS, hub), MemoryClient(DO, hub)
    t_ds, t_do = ds.make_transport(), do.make_transport()
    do_fp = fingerprint(load_or_create_keys(do, t_do))
    rpc = SyftFlwrRpc(t_ds, APP, settings=SMALL, policy=default_policy(ds, t_ds, SMALL))
    rpc.send_request(DO, EP, b"first", expires_at=time.time() + 60)  # pins DO
    assert show_keys(ds)[1].fingerprint == do_fp

    new_fp = _replace_did(t_ds, DO)
    # a fresh policy (a restart) reads the DID again: refused, both fps named
    rpc2 = SyftFlwrRpc(
        t_ds, APP, settings=SMALL, policy=default_policy(ds, t_ds, SMALL)
    )
    with pytest.raises(PeerKeyChangedError) as err:
        rpc2.send_request(DO, EP, b"model", expires_at=time.time() + 60)
    assert do_fp in str(err.value) and new_fp in str(err.value)
    assert f"syft_flwr keys trust {DO}" in str(err.value)
    assert (err.value.pinned, err.value.published) == (do_fp, new_fp)
    info = show_keys(ds, DO)[1]
    assert (info.status, info.fingerprint, info.published) == ("changed", do_fp, new_fp)

    # a wrong fingerprint read over the phone: nothing changes
    with pytest.raises(ConfigError):
        trust_peer(ds, DO, do_fp)
    with pytest.raises(PeerKeyChangedError):
        SyftFlwrRpc(
            t_ds, APP, settings=SMALL, policy=default_policy(ds, t_ds, SMALL)
        ).send_request(DO, EP, b"x", expires_at=time.time() + 60)

    pin = trust_peer(ds, DO, new_fp.upper().replace(" ", "-"))
    assert pin.fingerprint == new_fp and pin.accepted
    rpc3 = SyftFlwrRpc(
        t_ds, APP, settings=SMALL, policy=default_policy(ds, t_ds, SMALL)
    )
    rpc3.send_request(DO, EP, b"after trust", expires_at=time.time() + 60)
    assert show_keys(ds, DO)[1].status == "accepted"


def test_receiving_side_refuses_a_changed_sender_too() -> None:
    hub = MemoryHub()
    ds, do = MemoryClient(DS, hub), MemoryClient(DO, hub)
    t_ds, t_do = ds.make_transport(), do.make_transport()
    pol_do = default_policy(do, t_do, SMALL)
    load_or_create_keys(ds, t_ds)
    pol_do.directory.get(DS)  # DO pinned DS
    _replace_did(t_do, DS)
    with pytest.raises(PeerKeyChangedError):
        pol_do.directory.get(DS, refresh=True)


def test_pins_are_private_state_files_0600(tmp_path: Path) -> None:
    ds, do = make_syft_client(tmp_path, DS), make_syft_client(tmp_path, DO)
    load_or_create_keys(do, do.make_transport())
    trust_peer(ds, DO)
    peers = ds.state_dir("_keys") / "peers.json"
    assert peers.is_file() and (peers.stat().st_mode & 0o777) == 0o600
    assert not str(peers).startswith(str(ds.datasites))  # never synced
    assert DO in json.loads(peers.read_text())["peers"]
    assert [p.name for p in peers.parent.iterdir()] == ["peers.json"]  # no temp left


def test_fingerprint_forms() -> None:
    keys = generate_keys()
    digits = fingerprint_digits(keys)
    groups = digits.split(" ")
    assert len(groups) == 6 and all(len(g) == 5 and g.isdigit() for g in groups)
    assert fingerprint_matches(digits, keys)
    assert fingerprint_matches(fingerprint(keys).upper(), keys)
    assert not fingerprint_matches(fingerprint(generate_keys()), keys)
    assert not fingerprint_matches("", keys)


def _run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    out = capsys.readouterr()
    return int(exc.value.code or 0), out.out + out.err


def test_cli_keys_show_and_trust(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ds, do = make_syft_client(tmp_path, DS), make_syft_client(tmp_path, DO)
    ds_conf, do_conf = str(ds.config_path), str(do.config_path)
    code, out = _run_cli(capsys, "keys", "--config", do_conf)  # unchanged command
    do_fp = fingerprint(load_or_create_keys(do, do.make_transport()))
    assert code == 0 and do_fp in out and "read aloud" in out

    code, out = _run_cli(capsys, "keys", "trust", DO, "--config", ds_conf)
    assert code == 0 and do_fp in out
    new_fp = _replace_did(do.make_transport(), DO)
    code, out = _run_cli(capsys, "keys", "show", DO, "--config", ds_conf)
    assert code == 0 and "changed" in out and do_fp in out and new_fp in out
    code, out = _run_cli(
        capsys, "keys", "trust", DO, "--fingerprint", do_fp, "--config", ds_conf
    )
    assert code == 2 and new_fp in out  # mismatch: refused, says what is published
    code, out = _run_cli(
        capsys, "keys", "trust", DO, "--fingerprint", new_fp, "--config", ds_conf
    )
    assert code == 0
    code, out = _run_cli(capsys, "keys", "show", "--config", ds_conf)
    assert code == 0 and "[you]" in out and f"{DO}  [accepted]" in out
    assert new_fp in out


# ------------------------------------------- authenticated pins, rollback (issue 24)


def _pinned_pair(tmp_path: Path):
    """DS has pinned DO (SyftBox files); returns (ds, do, peers.json of DS)."""
    ds, do = make_syft_client(tmp_path, DS), make_syft_client(tmp_path, DO)
    load_or_create_keys(do, do.make_transport())
    _send(ds, b"first")
    return ds, do, ds.state_dir("_keys") / PEERS_FILE


def _send(client, body: bytes) -> None:
    t = client.make_transport()
    rpc = SyftFlwrRpc(t, APP, settings=SMALL, policy=default_policy(client, t, SMALL))
    rpc.send_request(DO, EP, body, expires_at=time.time() + 60)


def _requests(client) -> list[Path]:
    return sorted(p for p in (client.datasites / DO).rglob("*.request*"))


def _edit(path: Path, change) -> None:
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


@pytest.mark.parametrize(
    "attack",
    [
        "swap identity key",
        "lower version",
        "remove the pin",
        "remove the tag",
        "copied from another party",
    ],
)
def test_tampered_pin_file_is_refused_never_re_pinned(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, attack: str
) -> None:
    ds, do, peers = _pinned_pair(tmp_path)
    evil = generate_keys()
    if attack == "swap identity key":
        # the attacker's key pinned for DO, and its did.json published for DO
        evil_fp = _replace_did(do.make_transport(), DO)
        assert evil_fp != fingerprint(load_keys(do))

        def change(doc):
            doc["peers"][DO]["identity_key"] = base64.urlsafe_b64encode(
                evil.identity.public_key().public_bytes_raw()
            ).decode()

        _edit(peers, change)
    elif attack == "lower version":
        _edit(peers, lambda doc: doc["peers"][DO].update(version=0))
    elif attack == "remove the pin":
        _edit(peers, lambda doc: doc["peers"].pop(DO))
    elif attack == "remove the tag":
        _edit(peers, lambda doc: doc.pop("tag"))
    else:  # another party's genuine, tagged pins
        other = make_syft_client(tmp_path, "eve@example.org")
        _send(other, b"eve pins DO")
        peers.write_bytes((other.state_dir("_keys") / PEERS_FILE).read_bytes())
    tampered = peers.read_bytes()
    before = _requests(ds)
    assert before  # the first request (the one that pinned DO) is there

    caplog.set_level(logging.WARNING)
    with pytest.raises(StateIntegrityError) as err:
        _send(ds, b"model")
    assert "pinned peer keys" in str(err.value)
    assert "failed its integrity check" in str(err.value)
    assert str(peers) in str(err.value)
    assert any(
        r.levelno == logging.ERROR
        and r.getMessage().startswith("refused the pinned peer keys")
        and str(peers) in r.getMessage()
        for r in caplog.records
    )
    assert _requests(ds) == before  # nothing sent
    assert peers.read_bytes() == tampered  # not silently re-pinned
    with pytest.raises(StateIntegrityError):
        show_keys(ds)


def test_untagged_pins_from_an_older_version_are_refused_until_adopted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ds, do, peers = _pinned_pair(tmp_path)
    do_fp = fingerprint(load_keys(do))
    # what syft_flwr wrote before pins were authenticated (format 1, no tag)
    doc = json.loads(peers.read_text())
    legacy = {
        "format": 1,
        "peers": {
            email: {k: v for k, v in pin.items() if k != "version"}
            for email, pin in doc["peers"].items()
        },
    }
    peers.write_text(json.dumps(legacy))
    before = _requests(ds)
    with pytest.raises(StateIntegrityError, match="syft_flwr keys adopt-pins"):
        _send(ds, b"model")
    assert _requests(ds) == before

    conf = str(ds.config_path)
    code, out = _run_cli(capsys, "keys", "adopt-pins", "--config", conf, "--yes")
    assert code == 0 and do_fp in out and DO in out and "kept 1" in out
    assert json.loads(peers.read_text())["format"] == 2
    _send(ds, b"model")  # works again, with the same pin
    assert len(_requests(ds)) == len(before) + 1
    assert show_keys(ds)[1].fingerprint == do_fp
    code, out = _run_cli(capsys, "keys", "adopt-pins", "--config", conf, "--yes")
    assert code == 0 and "nothing to adopt" in out


def test_explicit_trust_cannot_bring_back_an_older_did() -> None:
    hub = MemoryHub()
    ds, do = MemoryClient(DS, hub), MemoryClient(DO, hub)
    t_do = do.make_transport()
    load_or_create_keys(do, t_do)
    old_did = t_do.get(did_key(DO))
    pol = default_policy(ds, ds.make_transport(), SMALL)
    pol.directory.get(DO)
    rotate_prekey(do, grace=0)
    assert pol.directory.get(DO, refresh=True).version == 2
    t_do.put(did_key(DO), old_did)
    with pytest.raises(KeyRollbackError, match=r"\(version 1 < 2\)"):
        pol.directory.get(DO, refresh=True)
    with pytest.raises(KeyRollbackError):
        trust_peer(ds, DO)
    assert TrustStore(key_store_for(ds), load_keys(ds)).pinned(DO).version == 2


def test_a_store_on_disk_needs_the_party_keys(tmp_path: Path) -> None:
    with pytest.raises(EncryptionError, match="own keys"):
        TrustStore(FileKeyStore(tmp_path))


def test_adopt_pins_changes_nothing_when_the_user_declines(tmp_path: Path) -> None:
    ds, do, peers = _pinned_pair(tmp_path)
    doc = json.loads(peers.read_text())
    peers.write_text(json.dumps({"format": 1, "peers": doc["peers"]}))
    legacy = peers.read_bytes()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SYFT_FLWR_", "SYFTBOX_"))
    }
    proc = subprocess.run(  # the user's own process, answering the question "n"
        [sys.executable, "-m", "syft_flwr", "keys", "adopt-pins"]
        + ["--config", str(ds.config_path)],
        input="n\n",
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 1, proc.stderr
    assert fingerprint(load_keys(do)) in proc.stdout
    assert "nothing was changed" in proc.stdout
    assert peers.read_bytes() == legacy
    with pytest.raises(StateIntegrityError, match="adopt-pins"):
        _send(ds, b"model")
