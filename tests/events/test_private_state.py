"""A data owner's private state is authenticated: altered records are never acted on.

The ledger and the replies it keeps live in the data owner's private state folder;
a folder that is synced or shared by mistake lets others write there. These tests
alter that state as such a person would, between two runs of a real data owner
(real SyftBox folders, watchdog and encryption), and check that the data owner
never re-sends content it cannot vouch for and never runs a request twice.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

import pytest
from _support import APP, EventsRunner, wait_until

from syft_flwr.client import SyftCoreClient
from syft_flwr.config import Settings
from syft_flwr.crypto.policy import default_policy
from syft_flwr.data_owner.audit import AuditLog
from syft_flwr.data_owner.ledger import Ledger
from syft_flwr.events import TransportEvents
from syft_flwr.wire.mailbox import Incoming, SyftFlwrRpc

DS = "ds@example.org"
DO = "do1@example.org"
EP = "messages"
ENCRYPTED = Settings(encryption_enabled=True, poll_interval=0.25)


class Counter:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, body: bytes) -> bytes:
        self.calls += 1
        return b"honest reply: mean 4.0"


@pytest.fixture
def do_client(make_client: Callable[[str], SyftCoreClient]) -> SyftCoreClient:
    return make_client(DO)


@pytest.fixture
def researcher(
    make_client: Callable[[str], SyftCoreClient],
) -> Iterator[SyftFlwrRpc]:
    client = make_client(DS)
    transport = client.make_transport()
    yield SyftFlwrRpc(
        transport,
        APP,
        settings=ENCRYPTED,
        policy=default_policy(client, transport, ENCRYPTED),
    )
    transport.close()


def serve(client: SyftCoreClient, handler: Counter) -> TransportEvents:
    ev = TransportEvents(APP, client, settings=ENCRYPTED, poll_interval=0.25)
    ev.drain_timeout = 0.0
    ev.on_request(EP, handler)
    return ev


def wait_response(rpc: SyftFlwrRpc, mid: str) -> Incoming:
    return wait_until(
        lambda: rpc.response_for(DO, EP, mid), timeout=20, message=f"reply {mid}"
    )


def _answered_then_stopped(
    do_client: SyftCoreClient,
    researcher: SyftFlwrRpc,
    events_runner: EventsRunner,
    handler: Counter,
) -> str:
    """Serve one request, stop the data owner, make the researcher ask again."""
    first = serve(do_client, handler)
    events_runner.start(first)
    mid = researcher.send_request(DO, EP, b"train", expires_at=time.time() + 600)
    resp = wait_response(researcher, mid)
    assert resp.head.status_code == 200 and resp.body == b"honest reply: mean 4.0"
    events_runner.stop(first)
    first.transport.close()
    # The researcher lost the reply; the request is still there.
    researcher.transport.delete(researcher.head_key(DO, EP, DS, mid, "response"))
    return mid


def _refused(do_client: SyftCoreClient, mid: str) -> list[dict]:
    audit = AuditLog.for_client(do_client)
    return [
        e for e in audit.entries() if e.get("event") == "refused" and e.get("id") == mid
    ]


def test_an_altered_kept_reply_is_never_resent(
    do_client: SyftCoreClient,
    researcher: SyftFlwrRpc,
    events_runner: EventsRunner,
    caplog: pytest.LogCaptureFixture,
) -> None:
    handler = Counter()
    mid = _answered_then_stopped(do_client, researcher, events_runner, handler)
    kept = do_client.state_dir(APP) / Ledger.REPLIES / f"{mid}.reply"
    data = kept.read_bytes()
    assert b"honest reply: mean 4.0" in data  # a small reply is kept in plaintext
    kept.write_bytes(data.replace(b"mean 4.0", b"mean 1e3"))

    events_runner.start(serve(do_client, handler))
    resp = wait_response(researcher, mid)
    # Refused with the reason; the forged content never left, nothing ran again.
    assert resp.head.status_code == 409
    assert b"failed its integrity check" in resp.body and b"1e3" not in resp.body
    assert handler.calls == 1
    assert "kept reply to request " + mid in caplog.text
    assert any("integrity" in e["reason"] for e in _refused(do_client, mid))


def test_an_altered_ledger_record_is_refused(
    do_client: SyftCoreClient,
    researcher: SyftFlwrRpc,
    events_runner: EventsRunner,
    caplog: pytest.LogCaptureFixture,
) -> None:
    handler = Counter()
    mid = _answered_then_stopped(do_client, researcher, events_runner, handler)
    state = do_client.state_dir(APP)
    # Make the ledger say the request was only received (so it would run
    # again), keeping the old tags, and remove the reply it kept.
    lines = []
    for line in (state / Ledger.FILE).read_text().splitlines():
        rec = json.loads(line)
        if rec.get("id") == mid and "s" in rec:
            rec["s"] = "received"
        lines.append(json.dumps(rec))
    (state / Ledger.FILE).write_text("\n".join(lines) + "\n")
    (state / Ledger.REPLIES / f"{mid}.reply").unlink()

    events_runner.start(serve(do_client, handler))
    resp = wait_response(researcher, mid)
    assert resp.head.status_code == 409
    assert b"record of request" in resp.body and b"integrity check" in resp.body
    assert handler.calls == 1  # never run twice
    assert "failed their integrity check" in caplog.text and mid in caplog.text
    assert _refused(do_client, mid)
