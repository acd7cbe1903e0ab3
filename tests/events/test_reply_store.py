"""The reply store (data_owner/reply_store.py): the one home of kept replies."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from syft_flwr.crypto.keys import generate_keys
from syft_flwr.crypto.state_mac import StateKey
from syft_flwr.data_owner.reply_store import ReplyStore, chunk_owner
from syft_flwr.errors import StateIntegrityError

DS = "ds@example.org"


def test_a_kept_reply_reads_back_for_its_sender_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = ReplyStore(tmp_path / "replies", StateKey(generate_keys(), "ledger"))
    store.write("m-1", 200, b"weights", durable=True, peer=DS)
    assert store.read("m-1", DS) == (200, b"weights")
    with caplog.at_level(logging.WARNING):
        assert store.read("m-1", "eve@example.org") is None
    assert "answers ds@example.org, not eve@example.org" in caplog.text
    assert not list((tmp_path / "replies").glob("*.tmp"))  # written atomically


def test_a_changed_kept_reply_is_refused_never_sent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = ReplyStore(tmp_path, StateKey(generate_keys(), "ledger"))
    store.write("m-1", 200, b"weights", durable=False, peer=DS)
    path = tmp_path / "m-1.reply"
    data = bytearray(path.read_bytes())
    data[-33] ^= 1  # one bit of the body (its last byte, before the tag)
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING), pytest.raises(StateIntegrityError):
        store.read("m-1", DS)
    assert "it is not sent" in caplog.text


def test_a_kept_reply_under_another_requests_name_is_refused(tmp_path: Path) -> None:
    store = ReplyStore(tmp_path, StateKey(generate_keys(), "ledger"))
    store.write("m-1", 200, b"for m-1", durable=False, peer=DS)
    (tmp_path / "m-1.reply").rename(tmp_path / "m-2.reply")
    with pytest.raises(StateIntegrityError):
        store.read("m-2", DS)


def test_sweep_keeps_only_what_the_ledger_keeps(tmp_path: Path) -> None:
    store = ReplyStore(tmp_path, None)
    for mid in ("keep", "gone"):
        store.write(mid, 200, mid.encode(), durable=False)
    (tmp_path / "gone.a0.000000.chunk").write_bytes(b"c")
    (tmp_path / "keep.a0.000000.chunk").write_bytes(b"c")
    store.sweep({"keep"}, now=0.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "keep.a0.000000.chunk",
        "keep.reply",
    ]


def test_in_memory_without_a_folder(tmp_path: Path) -> None:
    store = ReplyStore(None, None)
    store.write("m-1", 500, b"err", durable=True)
    assert store.read("m-1") == (500, b"err")
    store.delete(["m-1"])
    assert store.read("m-1") is None
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("name", "owner"),
    [
        ("m-1.a0.000003.chunk", "m-1"),
        ("m.a1.a2.000000.chunk", "m.a1"),
        ("m-1.reply", None),
        ("m-1.ax.000000.chunk", None),
        (".a0.000000.chunk", None),
    ],
)
def test_chunk_owner(name: str, owner: str | None) -> None:
    assert chunk_owner(name) == owner
