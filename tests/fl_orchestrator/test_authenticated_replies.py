"""The bad-input corpus, part 3: reply files the addressed data owner did not write.

Encryption on (the default), real SyftBox folders and watchdog. A file planted
where the data owner's reply goes is logged and set aside; it never ends the
wait, and the data owner's real (sealed) reply still arrives and is returned.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from _support import (
    APP,
    RESEARCHER,
    EventsRunner,
    flower_handler,
    make_syft_client,
    wait_until,
)
from flwr.app import ConfigRecord, RecordDict

from syft_flwr.config import Settings
from syft_flwr.crypto.policy import default_policy
from syft_flwr.data_owner.loop import TransportEvents
from syft_flwr.events import create_events_watcher
from syft_flwr.researcher.grid import SyftGrid
from syft_flwr.wire.envelope import PlainCodec, SealContext, encode_message, format_time
from syft_flwr.wire.mailbox import SyftFlwrRpc

DO = "do1@example.org"
EVE = "eve@example.org"
EP = "messages"
ENC = Settings(encryption_enabled=True, poll_interval=0.25)


def _plain_head(
    mid: str, *, sender: str = DO, status: int = 500, body: bytes = b""
) -> bytes:
    ctx = SealContext(
        mid, sender, RESEARCHER, APP, EP, "response", format_time(time.time() + 60)
    )
    head, _ = encode_message(
        ctx=ctx,
        url=f"syft://{DO}/app_data/{APP}/rpc/{EP}",
        body=body or b"500 internal error (planted)",
        created=format_time(time.time()),
        codec=PlainCodec(),
        chunk_size=ENC.chunk_size,
        inline_limit=ENC.inline_limit,
        status_code=status,
    )
    return head


def _sealed_by_eve(root: Path, mid: str) -> bytes:
    """A reply Eve seals to the researcher with her own keys, claiming to be DO."""
    eve = make_syft_client(root, EVE)
    t = eve.make_transport()
    rpc = SyftFlwrRpc(t, APP, settings=ENC, policy=default_policy(eve, t, ENC))
    folder = f"{DO}/app_data/{APP}/rpc/{EP}/{RESEARCHER}"
    from syft_flwr.transports.base import RpcPath

    path = RpcPath.parse(f"{folder}/{mid}.request")
    assert path is not None
    # written where Eve can write (her own datasite), then moved into place
    rpc.send_response(path, request_id=mid, status_code=200, body=b"poisoned model")
    t.close()
    p = eve.datasites / folder / f"{mid}.response"
    return p.read_bytes()


PLANTS: dict[str, Callable[[Path, str], bytes]] = {
    "plaintext 500 error": lambda root, mid: _plain_head(mid),
    "plaintext success": lambda root, mid: _plain_head(mid, status=200, body=b"x"),
    "sender is someone else": lambda root, mid: _plain_head(mid, sender=EVE),
    "1e999 in the head": lambda root, mid: _plain_head(mid).replace(
        b'"status_code":500', b'"status_code":1e999'
    ),
    "sealed with another key": _sealed_by_eve,
    "truncated JSON": lambda root, mid: _plain_head(mid)[:40],
    "not JSON at all": lambda root, mid: b"\x00\x01garbage",
}


@pytest.mark.parametrize("case", list(PLANTS), ids=list(PLANTS))
def test_planted_reply_never_ends_the_wait(
    case: str, syft_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="syft_flwr")
    runner = EventsRunner()
    researcher = make_syft_client(syft_root, RESEARCHER)
    owner = make_syft_client(syft_root, DO)
    gate = threading.Event()
    real = flower_handler(DO)

    def slow_owner(body: bytes) -> bytes:
        assert gate.wait(20), "the test never released the data owner"
        return real(body)

    ev = create_events_watcher(APP, owner, settings=ENC, poll_interval=0.25)
    assert isinstance(ev, TransportEvents)
    ev.drain_timeout = 0.0
    ev.on_request(EP, slow_owner)
    runner.start(ev)
    grid = SyftGrid(APP, [DO], client=researcher, settings=ENC)
    try:
        grid.set_run(7)
        msg = grid.create_message(
            RecordDict({"config": ConfigRecord({"x": 1})}),
            "train",
            grid.node_id_of(DO),
            "g",
        )
        result: list = []
        t = threading.Thread(
            target=lambda: result.extend(grid.send_and_receive([msg], timeout=30))
        )
        t.start()
        folder = researcher.datasites / DO / "app_data" / APP / "rpc" / EP / RESEARCHER
        # push_messages (in the thread) gives the message its id
        mid = wait_until(lambda: msg.metadata.message_id, timeout=10)
        wait_until(lambda: (folder / f"{mid}.request").exists(), timeout=10)
        planted = PLANTS[case](syft_root, mid)
        (folder / f"{mid}.response").write_bytes(planted)
        if case not in ("truncated JSON", "not JSON at all"):
            wait_until(lambda: "set aside a reply file" in caplog.text, timeout=10)
        time.sleep(0.5)
        assert t.is_alive() and not result, f"{case}: the planted file ended the wait"
        gate.set()
        t.join(timeout=30)
        assert len(result) == 1
        reply = result[0]
        assert not reply.has_error(), reply.error
        assert reply.content.config_records["echo"]["owner"] == DO
        assert grid.tally.succeeded == 1 and grid.tally.failed == 0
    finally:
        gate.set()
        runner.stop_all()
        grid.close()
        grid.transport.close()


def test_a_data_owner_replaces_a_reply_it_did_not_write(
    syft_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The reply slot is taken before the data owner even starts: it still answers."""
    caplog.set_level(logging.INFO, logger="syft_flwr")
    researcher = make_syft_client(syft_root, RESEARCHER)
    owner = make_syft_client(syft_root, DO)
    t = researcher.make_transport()
    rpc = SyftFlwrRpc(t, APP, settings=ENC, policy=default_policy(researcher, t, ENC))
    # The owner must have published its keys for the researcher to seal to it.
    ot = owner.make_transport()
    default_policy(owner, ot, ENC)
    from syft_flwr.crypto.policy import load_or_create_keys

    load_or_create_keys(owner, ot)
    ot.close()
    mid = rpc.send_request(DO, EP, b"work", expires_at=time.time() + 60)
    folder = researcher.datasites / DO / "app_data" / APP / "rpc" / EP / RESEARCHER
    (folder / f"{mid}.response").write_bytes(_plain_head(mid))
    runner = EventsRunner()
    ran: list[bytes] = []
    ev = create_events_watcher(APP, owner, settings=ENC, poll_interval=0.25)
    assert isinstance(ev, TransportEvents)
    ev.drain_timeout = 0.0
    ev.on_request(EP, lambda body: ran.append(body) or b"done:" + body)
    runner.start(ev)
    try:
        resp = wait_until(
            lambda: _try(lambda: rpc.response_for(DO, EP, mid)), timeout=15
        )
        assert resp.head.status_code == 200 and resp.body == b"done:work"
        assert ran == [b"work"]
        assert "was not written by do1@example.org" in caplog.text
    finally:
        runner.stop_all()
        t.close()


@pytest.mark.parametrize("how", ["missing", "half synced"])
def test_missing_researcher_keys_are_waited_for_not_refused(
    how: str, syft_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A half-synced researcher did.json: the data owner waits instead of a 403."""
    caplog.set_level(logging.INFO, logger="syft_flwr")
    researcher = make_syft_client(syft_root, RESEARCHER)
    owner = make_syft_client(syft_root, DO)
    t = researcher.make_transport()
    rpc = SyftFlwrRpc(t, APP, settings=ENC, policy=default_policy(researcher, t, ENC))
    from syft_flwr.crypto.policy import load_or_create_keys

    ot = owner.make_transport()
    load_or_create_keys(owner, ot)
    ot.close()
    mid = rpc.send_request(DO, EP, b"work", expires_at=time.time() + 60)
    did = researcher.datasites / RESEARCHER / "public" / "did.json"
    saved = did.read_bytes()
    if how == "missing":
        did.unlink()  # not synced to the data owner yet
    else:
        did.write_bytes(saved[: len(saved) // 2])  # a sync caught mid-file
    runner = EventsRunner()
    ev = create_events_watcher(APP, owner, settings=ENC, poll_interval=0.25)
    assert isinstance(ev, TransportEvents)
    ev.drain_timeout = 0.0
    ev.on_request(EP, lambda body: b"done:" + body)
    runner.start(ev)
    try:
        time.sleep(1.0)
        folder = researcher.datasites / DO / "app_data" / APP / "rpc" / EP / RESEARCHER
        assert not (folder / f"{mid}.response").exists(), "refused instead of waiting"
        did.write_bytes(saved)  # the sync catches up
        resp = wait_until(
            lambda: _try(lambda: rpc.response_for(DO, EP, mid)), timeout=30
        )
        assert resp.head.status_code == 200 and resp.body == b"done:work"
    finally:
        runner.stop_all()
        t.close()


def _try(fn: Callable[[], object]) -> object:
    try:
        return fn()
    except Exception:
        return None
