"""Attack: the data owner's own old sealed reply, re-planted as the reply to a new request.

Real SyftBox folders, watchdog, X3DH keys, a real ``SyftGrid`` and real data
owner events loops. Before, the data owner saw "a reply from me" and skipped the
new request; the researcher waited until its timeout. Now the data owner checks
the reply's id and its own seal, replaces what it cannot vouch for, and the
researcher, which refused the planted file, gets the real result.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from pathlib import Path

import pytest
from _support import (
    APP,
    RESEARCHER,
    EventsRunner,
    OwnerLog,
    flower_handler,
    make_syft_client,
    wait_until,
)
from flwr.app import ConfigRecord, Message, RecordDict

from syft_flwr.config import Settings
from syft_flwr.crypto.policy import default_policy, load_or_create_keys
from syft_flwr.data_owner.loop import TransportEvents
from syft_flwr.events import create_events_watcher
from syft_flwr.researcher.grid import SyftGrid
from syft_flwr.wire.mailbox import SyftFlwrRpc

DO = "do1@example.org"
EP = "messages"
ENC = Settings(encryption_enabled=True, poll_interval=0.25)


def _owner(root: Path, log: OwnerLog, written: dict[str, bytes]) -> TransportEvents:
    """The data owner's loop; ``written`` records every reply head it writes."""
    ev = create_events_watcher(
        APP, make_syft_client(root, DO), settings=ENC, poll_interval=0.25
    )
    assert isinstance(ev, TransportEvents)
    ev.drain_timeout = 0.0
    ev.on_request(EP, flower_handler(DO, log))
    put = ev.transport.put

    def recording_put(key: str, data: bytes) -> None:
        if key.endswith(".response"):
            written[key.rsplit("/", 1)[-1][: -len(".response")]] = data
        put(key, data)

    ev.transport.put = recording_put  # type: ignore[method-assign]
    return ev


def _ask(grid: SyftGrid, round_: str) -> Message:
    return grid.create_message(
        RecordDict({"config": ConfigRecord({"round": round_})}),
        "train",
        grid.node_id_of(DO),
        "g",
    )


@pytest.mark.parametrize("how", ["copied as it is", "id rewritten to the new one"])
def test_a_replanted_own_reply_does_not_silence_the_data_owner(
    how: str, syft_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="syft_flwr")
    log = OwnerLog(DO)
    written: dict[str, bytes] = {}
    runner = EventsRunner()
    first = _owner(syft_root, log, written)
    runner.start(first)
    grid = SyftGrid(
        APP, [DO], client=make_syft_client(syft_root, RESEARCHER), settings=ENC
    )
    try:
        grid.set_run(7)
        (old,) = grid.send_and_receive([_ask(grid, "one")], timeout=30)
        assert not old.has_error(), old.error
        ((old_id, old_reply),) = (
            written.items()
        )  # the data owner's genuine sealed reply
        runner.stop(first)
        first.transport.close()

        # The next request; the old reply is planted as its answer before the
        # data owner (offline for now) sees it.
        msg = _ask(grid, "two")
        result: list[Message] = []
        t = threading.Thread(
            target=lambda: result.extend(grid.send_and_receive([msg], timeout=30))
        )
        t.start()
        folder = syft_root / "SyftBox" / "datasites" / DO / "app_data" / APP / "rpc"
        folder = folder / EP / RESEARCHER
        mid = wait_until(lambda: msg.metadata.message_id, timeout=10)
        wait_until(lambda: (folder / f"{mid}.request").exists(), timeout=10)
        planted = old_reply
        if how.startswith("id rewritten"):
            doc = json.loads(old_reply)
            doc["id"] = mid
            planted = json.dumps(doc).encode()
        (folder / f"{mid}.response").write_bytes(planted)
        # The researcher does not take it for the answer ...
        wait_until(lambda: "set aside a reply file" in caplog.text, timeout=15)
        assert t.is_alive() and not result

        # ... and the data owner, back online, answers the new request anyway.
        second = _owner(syft_root, log, written)
        runner.start(second)
        t.join(timeout=30)
        assert len(result) == 1
        reply = result[0]
        assert not reply.has_error(), reply.error
        assert reply.content.config_records["echo"]["owner"] == DO
        assert reply.content.config_records["echo"]["in_round"] == "two"
        assert reply.metadata.reply_to_message_id == mid != old_id
        assert [
            m.content.config_records["config"]["round"] for m in log.snapshot()
        ] == [
            "one",
            "two",
        ]
        assert f"was not written by {DO} for this request as it stands" in caplog.text
        assert grid.tally.succeeded == 2 and grid.tally.failed == 0
    finally:
        runner.stop_all()
        grid.close()
        grid.transport.close()


def test_its_own_genuine_reply_is_kept_and_the_work_not_run_again(
    syft_root: Path,
) -> None:
    """The other side of the check: a data owner that lost its ledger (or another
    device of it) finds its own sealed reply to the request and does not run it
    again; the same reply under another request's name is replaced."""
    researcher = make_syft_client(syft_root, RESEARCHER)
    t = researcher.make_transport()
    rpc = SyftFlwrRpc(t, APP, settings=ENC, policy=default_policy(researcher, t, ENC))
    owner = make_syft_client(syft_root, DO)
    ot = owner.make_transport()
    load_or_create_keys(owner, ot)
    ot.close()
    ran: list[bytes] = []

    def serve() -> TransportEvents:
        ev = create_events_watcher(APP, owner, settings=ENC, poll_interval=0.25)
        assert isinstance(ev, TransportEvents)
        ev.on_request(EP, lambda body: ran.append(body) or b"done:" + body)
        return ev

    try:
        mid = rpc.send_request(DO, EP, b"work", expires_at=time.time() + 60)
        req = rpc.head_key(DO, EP, RESEARCHER, mid, "request")
        first = serve()
        first._process(req)  # noqa: SLF001 - one pass of the loop, synchronously
        first.transport.close()
        reply = (
            syft_root
            / "SyftBox"
            / "datasites"
            / rpc.head_key(DO, EP, RESEARCHER, mid, "response")
        )
        genuine = reply.read_bytes()
        assert ran == [b"work"]

        shutil.rmtree(owner.state_dir(APP))  # its ledger is lost
        again = serve()
        again._process(req)  # noqa: SLF001
        assert ran == [b"work"], "the data owner ran the request twice"
        assert reply.read_bytes() == genuine

        # Its genuine reply, copied as the reply to a new request: replaced.
        other = rpc.send_request(DO, EP, b"more", expires_at=time.time() + 60)
        copied = reply.with_name(f"{other}.response")
        copied.write_bytes(genuine)
        again._process(rpc.head_key(DO, EP, RESEARCHER, other, "request"))  # noqa: SLF001
        again.transport.close()
        assert ran == [b"work", b"more"]
        assert copied.read_bytes() != genuine
        assert rpc.response_for(DO, EP, other).body == b"done:more"  # type: ignore[union-attr]
        assert rpc.response_for(DO, EP, mid).body == b"done:work"  # type: ignore[union-attr]
    finally:
        t.close()
