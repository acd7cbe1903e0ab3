"""Hostile approved ClientApps, contained: each attack refused or killed, the owner stays up.

Through the data owner's serving loop, with the ClientApp in a real worker
process contained at level full (skipped, with the reason, where this machine
cannot contain: ``sandbox`` probe). Each attack gets a clear error reply and an
audit entry naming the containment; nothing it aimed at is touched; the next
request, from a well-behaved call, is answered.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from _hostile_app import write_app
from _support import APP, PLAIN, EventsRunner, wait_until
from flwr.app import ConfigRecord, Message, RecordDict

from syft_flwr._flwr_compat import set_message_id, set_routing, set_task_identity
from syft_flwr.client import SyftCoreClient
from syft_flwr.crypto.policy import load_or_create_keys
from syft_flwr.data_owner.audit import audit_entries
from syft_flwr.data_owner.contain.app import ContainedClientApp
from syft_flwr.data_owner.contain.policy import ContainmentPolicy
from syft_flwr.data_owner.contain.probe import run_probe
from syft_flwr.data_owner.contain.process import WorkerSpec
from syft_flwr.data_owner.handler import ClientAppHandler
from syft_flwr.data_owner.loop import TransportEvents
from syft_flwr.data_owner.runner import _audited
from syft_flwr.ids import node_id_for
from syft_flwr.serde import bytes_to_flower_message, flower_message_to_bytes
from syft_flwr.wire.mailbox import PlaintextPolicy, SyftFlwrRpc

DS = "ds@example.org"
DO = "do1@example.org"
EP = "messages"
RUN = 7


def _missing() -> str | None:
    enforced = run_probe(ContainmentPolicy())
    gone = [f"{x.name} ({x.how})" for x in enforced.missing]
    return "; ".join(gone) or None


_WHY = _missing()
pytestmark = pytest.mark.skipif(
    _WHY is not None, reason=f"this machine cannot contain: {_WHY}"
)


def request(action: str, mid: str, **cfg: object) -> bytes:
    set_task_identity(RUN, 1)
    msg = Message(
        RecordDict({"config": ConfigRecord({"action": action, **cfg})}),  # type: ignore[dict-item]
        dst_node_id=node_id_for(DO),
        message_type="train",
    )
    set_message_id(msg, mid)
    set_routing(msg, run_id=RUN, src_node_id=1)
    return flower_message_to_bytes(msg)


class Owner:
    """A data owner serving the hostile app contained, and a researcher asking."""

    def __init__(self, do: SyftCoreClient, rpc: SyftFlwrRpc, app: ContainedClientApp):
        self.do, self.rpc, self.app = do, rpc, app

    def ask(self, action: str, **cfg: object) -> Message:
        mid = f"{action}-{uuid.uuid4().hex[:8]}"
        self.rpc.send_request(
            DO, EP, request(action, mid, **cfg), expires_at=time.time() + 30,
            message_id=mid,
        )  # fmt: skip
        r = wait_until(lambda: self.rpc.response_for(DO, EP, mid), timeout=30)
        assert r.head.status_code == 200, r.body
        self.last = mid
        return bytes_to_flower_message(r.body)

    def refused(self, action: str, **cfg: object) -> str:
        """Ask for ``action``: an error reply; the audit entry; the next call works."""
        reply = self.ask(action, **cfg)
        assert reply.has_error(), f"{action} was not refused"
        run = wait_until(
            lambda: next(
                (e for e in audit_entries(self.do)
                 if e["event"] == "run" and e["id"] == self.last), None,
            )
        )  # fmt: skip
        assert run["containment"] == "full" and run["outcome"] == "error"
        ok = self.ask("ok")
        assert not ok.has_error() and ok.content["m"]["rows"] == 3  # type: ignore[index]
        return str(reply.error.reason)


@pytest.fixture
def owner(
    tmp_path: Path,
    make_client: Callable[[str], SyftCoreClient],
    events_runner: EventsRunner,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Owner]:
    data = tmp_path / "data"
    data.mkdir()
    (data / "data.csv").write_text("a\nb\nc\n")
    monkeypatch.setenv("DATA_DIR", str(data))
    monkeypatch.setenv("SYFT_FLWR_REVEAL_ERRORS", "1")  # the reasons, for the asserts
    write_app(tmp_path / "app")
    app = ContainedClientApp(
        WorkerSpec(
            app_dir=tmp_path / "app",
            ref="hostile.client:app",
            files=None,
            node_id=node_id_for(DO),
            policy=ContainmentPolicy(max_processes=64),
            max_bytes=1 << 20,
        )
    )
    assert app.start().summary() == "full"
    do = make_client(DO)
    rpc_client = make_client(DS)
    rpc = SyftFlwrRpc(
        rpc_client.make_transport(), APP, settings=PLAIN, policy=PlaintextPolicy()
    )
    ev = TransportEvents(APP, do, settings=PLAIN, poll_interval=0.25)
    ev.drain_timeout = 0.0
    ev.on_request(EP, _audited(ClientAppHandler(app, email=DO), app))
    events_runner.start(ev)
    try:
        yield Owner(do, rpc, app)
    finally:
        events_runner.stop(ev)
        rpc.transport.close()
        app.close()


def test_a_socket_to_a_loopback_listener_of_the_host_never_connects(owner: Owner):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.setblocking(False)
        port = listener.getsockname()[1]
        reason = owner.refused("connect", port=port)
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing ever reached it
    assert "ClientApp raised" in reason


def test_a_dns_lookup_fails(owner: Owner):
    assert "ClientApp raised gaierror" in owner.refused("dns")


def test_the_data_owners_private_key_file_cannot_be_read(owner: Owner, syft_root: Path):
    load_or_create_keys(owner.do, owner.do.make_transport())
    [key] = list(syft_root.rglob("pvt.jwks.json"))
    assert "PermissionError" in owner.refused("read", target=str(key))


def test_another_data_owners_dataset_cannot_be_read(owner: Owner, tmp_path: Path):
    other = tmp_path / "other_owner_data"
    other.mkdir()
    (other / "data.csv").write_text("someone else's rows\n")
    assert "PermissionError" in owner.refused("read", target=str(other / "data.csv"))


def test_nothing_can_be_written_into_the_datasites_or_the_outbox(
    owner: Owner, datasites_dir: Path
):
    outbox = datasites_dir / DO / "app_data" / APP / "rpc" / EP / DS
    outbox.mkdir(parents=True, exist_ok=True)
    for target in (outbox / "forged.response", datasites_dir / DO / "forged.txt"):
        assert "PermissionError" in owner.refused("write", target=str(target))
        assert not target.exists()


def test_a_fork_bomb_hits_the_process_limit(owner: Owner):
    assert "BlockingIOError" in owner.refused("fork_bomb")


def test_an_8_gb_allocation_hits_the_memory_limit(owner: Owner):
    assert "MemoryError" in owner.refused("allocate")


def _running(marker: str) -> bool:
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                    return True
            except OSError:
                continue
    return False


def test_a_grandchild_does_not_outlive_the_request(owner: Owner, caplog):
    caplog.set_level(logging.INFO, logger="syft_flwr")
    marker = f"syft-flwr-grandchild-{uuid.uuid4().hex}"
    reply = owner.ask("grandchild", marker=marker)
    assert not reply.has_error() and reply.content["m"]["rows"] == 3  # type: ignore[index]
    assert not _running(marker)  # ended by the worker before it replied
