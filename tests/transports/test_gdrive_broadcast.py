"""One push to several data owners over Google Drive: the model is uploaded once.

A researcher and three data owners, each its own Drive account on the loopback
Drive server (the real google-api-python-client), encryption on. The grid
stores a broadcast array once in a shared Drive folder readable by the
addressed data owners only; every upload is counted on the server side.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _support import EventsRunner, echo_reply, wait_until
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict

from syft_flwr.client import SyftP2PClient
from syft_flwr.config import Settings
from syft_flwr.data_owner.loop import TransportEvents
from syft_flwr.events import create_events_watcher
from syft_flwr.researcher.grid import SyftGrid
from syft_flwr.serde import bytes_to_flower_message, flower_message_to_bytes
from syft_flwr.testing.drive_server import FakeDriveServer
from syft_flwr.transports.gdrive import GDriveTransport
from syft_flwr.transports.gdrive._layout import parse_shared_folder_name

pytestmark = pytest.mark.gdrive

APP = "flwr/test_app"
DS = "ds@example.org"
DOS = ("do1@example.org", "do2@example.org", "do3@example.org")
MiB = 1024 * 1024
ENC = Settings(encryption_enabled=True, poll_interval=0.25, chunk_size=MiB)
MODEL = 3 * MiB + 123  # four 1 MiB chunks (each + a 16-byte GCM tag)


class Uploads:
    """Server side: the content bytes each user stored, per file name."""

    def __init__(self, server: FakeDriveServer) -> None:
        self.log: list[tuple[str, str, int]] = []
        self.lock = threading.Lock()
        store = server.store
        create, update = store.create, store.update

        def on_create(user: str, meta: dict[str, Any], content: Any = None, *a: Any):  # noqa: ANN202
            rec = create(user, meta, content, *a)
            self._add(user, rec.name, content)
            return rec

        def on_update(user: str, file_id: str, meta: dict[str, Any], **kw: Any):  # noqa: ANN202
            rec = update(user, file_id, meta, **kw)
            self._add(user, rec.name, kw.get("content"))
            return rec

        store.create = on_create  # type: ignore[method-assign]
        store.update = on_update  # type: ignore[method-assign]

    def _add(self, user: str, name: str, content: bytes | None) -> None:
        if content is not None:
            with self.lock:
                self.log.append((user, name, len(content)))

    def by(self, user: str, part: str) -> list[tuple[str, int]]:
        with self.lock:
            return [(n, size) for u, n, size in self.log if u == user and part in n]


def _client(server: FakeDriveServer, email: str, tmp: Path) -> SyftP2PClient:
    def factory() -> GDriveTransport:
        return GDriveTransport(email, lambda: server.service(email), poll_interval=0.5)

    return SyftP2PClient(email, transport_factory=factory, state_root=tmp / email)


@pytest.fixture
def net(tmp_path: Path) -> Iterator[tuple[FakeDriveServer, dict[str, list[str]]]]:
    seen: dict[str, list[str]] = {}
    lock = threading.Lock()
    runner = EventsRunner()
    with FakeDriveServer() as server:
        for email in DOS:

            def handle(body: bytes, email: str = email) -> bytes:
                msg: Message = bytes_to_flower_message(body)
                with lock:
                    seen.setdefault(email, []).extend(
                        hashlib.sha256(a.data).hexdigest()
                        for rec in msg.content.array_records.values()
                        for a in rec.values()
                    )
                return flower_message_to_bytes(echo_reply(msg, email))

            ev = create_events_watcher(
                APP,
                _client(server, email, tmp_path),
                poll_interval=0.25,
                settings=ENC,
                allowed_senders=[DS],
            )
            assert isinstance(ev, TransportEvents)
            ev.drain_timeout = 0.0
            ev.on_request("messages", handle)
            runner.start(ev)
        try:
            yield server, seen
        finally:
            runner.stop_all()


@pytest.mark.parametrize("addressed", [DOS[:2], DOS])
def test_a_broadcast_model_is_uploaded_once_and_its_folder_removed(
    net: tuple[FakeDriveServer, dict[str, list[str]]],
    tmp_path: Path,
    addressed: tuple[str, ...],
) -> None:
    server, seen = net
    uploads = Uploads(server)
    researcher = _client(server, DS, tmp_path)
    transport = researcher.make_transport()
    grid = SyftGrid(APP, list(addressed), researcher, transport=transport, settings=ENC)
    try:
        grid.set_run(7)
        model = Array(np.random.default_rng(1).integers(0, 255, MODEL, dtype=np.uint8))
        record = RecordDict(
            {"arrays": ArrayRecord({"w": model}), "config": ConfigRecord({"lr": 0.1})}
        )
        msgs = [
            grid.create_message(record, "train", nid, "round_1")
            for nid in grid.get_node_ids()
        ]
        replies = grid.send_and_receive(msgs, timeout=60)
        assert len(replies) == len(addressed)
        assert not any(r.has_error() for r in replies)
        # Server side: the researcher stored the model once, in one shared folder.
        shared = uploads.by(DS, "/blobs/")
        assert len(shared) == 4, shared
        assert sum(n for _, n in shared) == len(model.data) + 4 * 16
        assert len({name.rsplit("/", 1)[0] for name, _ in shared}) == 1
        assert sum(n for _, n in uploads.by(DS, "/rpc/")) < 64 * 1024
        # Every addressed data owner got the exact bytes; the others nothing.
        want = hashlib.sha256(model.data).hexdigest()
        assert {o: seen.get(o) for o in addressed} == {o: [want] for o in addressed}
        assert not any(seen.get(o) for o in DOS if o not in addressed)
        for r in replies:
            assert r.content["arrays"]["w"].data == model.data
        # Everyone answered: the shared Drive folder is gone.
        wait_until(
            lambda: (
                not [
                    f
                    for f in server.files_of(DS)
                    if parse_shared_folder_name(f["name"]) and not f["trashed"]
                ]
            ),
            timeout=10,
            message="the shared Drive folder removed",
        )
    finally:
        grid.close()
        transport.close()
