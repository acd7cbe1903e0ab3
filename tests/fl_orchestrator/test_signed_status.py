"""Attack: change the status (or creation time) of the data owner's genuine sealed reply.

Real SyftBox folders, watchdog, X3DH keys, a real ``SyftGrid`` and a real data
owner events loop. The data owner's reply is altered on its way (as a sync relay
or anyone who can write the folder could): the researcher refuses the altered
head with a logged reason, deletes nothing, never shows the model bytes, keeps
waiting, and takes the genuine reply once it is there.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _support import (
    APP,
    RESEARCHER,
    EventsRunner,
    flower_handler,
    make_syft_client,
    wait_until,
)
from flwr.app import ConfigRecord, Message, RecordDict

from syft_flwr.config import Settings
from syft_flwr.data_owner.loop import TransportEvents
from syft_flwr.events import create_events_watcher
from syft_flwr.researcher.grid import SyftGrid

DO = "do1@example.org"
EP = "messages"
ENC = Settings(encryption_enabled=True, poll_interval=0.25)
PLAIN = Settings(encryption_enabled=False, poll_interval=0.25)
#: Echoed back in the reply's content: must never appear in a log or a reason.
SECRET = "SECRET-MODEL-BYTES-4711"
Edit = Callable[[dict[str, Any]], None]


def _status(code: int) -> Edit:
    return lambda doc: doc.__setitem__("status_code", code)


def _strip_seal(doc: dict[str, Any]) -> None:
    """Pass the sealed reply off as a refusal the data owner could not seal."""
    doc["status_code"] = 500
    doc["syft_flwr"]["encryption"] = None
    doc["syft_flwr"]["size"] = len(base64.b64decode(doc["body"]))  # consistent


EDITS: dict[str, Edit] = {
    "status 200 -> 500": _status(500),
    "status 200 -> 409": _status(409),
    "created back-dated": lambda doc: doc.__setitem__(
        "created", "2020-01-01T00:00:00+00:00"
    ),
    "seal stripped, status 500": _strip_seal,
}


class _Relay:
    """Alters the data owner's reply head on its way, and can deliver the real one."""

    def __init__(self, events: TransportEvents, edit: Edit) -> None:
        self.edit = edit
        self.genuine: dict[Path | str, bytes] = {}
        self._put = events.transport.put
        events.transport.put = self.put  # type: ignore[method-assign]

    def put(self, key: str, data: bytes) -> None:
        if key.endswith(".response") and not self.genuine:
            self.genuine[key] = data
            doc = json.loads(data)
            self.edit(doc)
            data = json.dumps(doc).encode()
        self._put(key, data)


def _run(
    root: Path, settings: Settings, edit: Edit
) -> tuple[SyftGrid, TransportEvents, EventsRunner, _Relay]:
    researcher = make_syft_client(root, RESEARCHER)
    owner = make_syft_client(root, DO)
    ev = create_events_watcher(APP, owner, settings=settings, poll_interval=0.25)
    assert isinstance(ev, TransportEvents)
    ev.drain_timeout = 0.0
    ev.on_request(EP, flower_handler(DO))
    relay = _Relay(ev, edit)
    runner = EventsRunner()
    runner.start(ev)
    grid = SyftGrid(APP, [DO], client=researcher, settings=settings)
    grid.set_run(7)
    return grid, ev, runner, relay


def _message(grid: SyftGrid) -> Message:
    return grid.create_message(
        RecordDict({"config": ConfigRecord({"weights": SECRET})}),
        "train",
        grid.node_id_of(DO),
        "g",
    )


@pytest.mark.parametrize("edit", list(EDITS), ids=list(EDITS))
def test_an_altered_sealed_reply_is_set_aside_and_the_genuine_one_counts(
    edit: str, syft_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="syft_flwr")
    grid, ev, runner, relay = _run(syft_root, ENC, EDITS[edit])
    try:
        msg = _message(grid)
        result: list[Message] = []
        t = threading.Thread(
            target=lambda: result.extend(grid.send_and_receive([msg], timeout=30))
        )
        t.start()
        wait_until(lambda: "set aside a reply file" in caplog.text, timeout=15)
        ((key, genuine),) = relay.genuine.items()
        reply_file = syft_root / "SyftBox" / "datasites" / key
        # Refused with its reason; the altered file is not deleted, the wait goes on.
        expected = (
            "unauthenticated refusal"
            if "stripped" in edit
            else f"not signed by the identity key of {DO}"
        )
        assert expected in caplog.text
        assert reply_file.exists(), "the researcher deleted the data owner's reply"
        assert t.is_alive() and not result, "the altered reply ended the wait"
        assert grid.tally.failed == 0
        # The real reply arrives (the relay delivers the data owner's file).
        reply_file.write_bytes(genuine)
        t.join(timeout=30)
        assert len(result) == 1
        reply = result[0]
        assert not reply.has_error(), reply.error
        assert reply.content.config_records["echo"]["owner"] == DO
        assert grid.tally.succeeded == 1 and grid.tally.failed == 0
        # The model bytes were never shown (the reply's content carries SECRET).
        assert SECRET not in caplog.text
    finally:
        runner.stop_all()
        grid.close()
        grid.transport.close()


def test_with_encryption_off_a_flipped_status_never_shows_the_model(
    syft_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing is signed in plaintext mode: the flip counts, the bytes stay hidden."""
    caplog.set_level(logging.DEBUG, logger="syft_flwr")
    grid, ev, runner, relay = _run(syft_root, PLAIN, _status(500))
    try:
        (reply,) = grid.send_and_receive([_message(grid)], timeout=30)
        assert reply.has_error()
        assert "reason that is not text; not shown" in reply.error.reason
        assert SECRET not in reply.error.reason and SECRET not in caplog.text
        (genuine,) = relay.genuine.values()
        # The body really was the model, in clear (encryption off).
        assert SECRET.encode() in base64.b64decode(json.loads(genuine)["body"])
    finally:
        runner.stop_all()
        grid.close()
        grid.transport.close()
