"""A data owner keeps each reply once: the ledger's stored reply, aliased for resume.

Real folders, watchdog and threads. The reply cache (issue 15: a resumed
researcher re-sends a request under a new id) and the ledger (issue 11: a
resend or a restart never loses a result, never gets a false 409) share one
stored reply per request.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from _support import APP, PLAIN, EventsRunner, wait_until
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from syft_flwr._flwr_compat import set_message_id, set_routing, set_task_identity
from syft_flwr.client import SyftCoreClient
from syft_flwr.data_owner.handler import ClientAppHandler
from syft_flwr.data_owner.ledger import Ledger
from syft_flwr.data_owner.runner import _reply_cache
from syft_flwr.events import TransportEvents
from syft_flwr.ids import node_id_for
from syft_flwr.researcher.journal import ReplyCache
from syft_flwr.serde import bytes_to_flower_message, flower_message_to_bytes
from syft_flwr.wire.mailbox import PlaintextPolicy, SyftFlwrRpc

DS = "ds@example.org"
DO = "do1@example.org"
EP = "messages"


@pytest.fixture
def researcher(make_client: Callable[[str], SyftCoreClient]):
    c = make_client(DS)
    rpc = SyftFlwrRpc(c.make_transport(), APP, settings=PLAIN, policy=PlaintextPolicy())
    yield rpc
    rpc.transport.close()


def _app(runs: list[str]) -> ClientApp:
    app = ClientApp()

    @app.train()
    def train(msg: Message, context):
        runs.append(msg.metadata.message_id)
        return Message(
            RecordDict({"metrics": MetricRecord({"run": len(runs)})}), reply_to=msg
        )

    return app


def _data_owner(
    client: SyftCoreClient, runs: list[str]
) -> tuple[TransportEvents, ClientAppHandler]:
    ev = TransportEvents(APP, client, settings=PLAIN, poll_interval=0.25)
    ev.drain_timeout = 0.0
    cache = _reply_cache(ev, client.state_dir(APP))
    assert isinstance(cache, ReplyCache) and cache.ledger is ev.ledger
    handler = ClientAppHandler(_app(runs), email=DO, reply_cache=cache)
    ev.on_request(EP, handler)
    return ev, handler


def _train_request(message_id: str, value: float = 1.0) -> bytes:
    set_task_identity(5)
    msg = Message(
        RecordDict(
            {
                "arrays": ArrayRecord([np.full(3, value)]),
                "config": ConfigRecord({"server-round": 2}),
            }
        ),
        dst_node_id=node_id_for(DO),
        message_type="train",
        group_id="2",
    )
    set_routing(msg, run_id=5, src_node_id=1)
    set_message_id(msg, message_id)
    return flower_message_to_bytes(msg)


def _send(rpc: SyftFlwrRpc, mid: str, value: float = 1.0) -> None:
    rpc.send_request(
        DO, EP, _train_request(mid, value), expires_at=time.time() + 60, message_id=mid
    )


def _reply(rpc: SyftFlwrRpc, mid: str, timeout: float = 10.0) -> Message:
    resp = wait_until(lambda: rpc.response_for(DO, EP, mid), timeout=timeout)
    assert resp.head.status_code == 200, resp.body
    return bytes_to_flower_message(resp.body)


def _stop(runner: EventsRunner, ev: TransportEvents) -> None:
    runner.stop(ev)
    ev.transport.close()


def test_each_reply_is_written_once_and_a_resumed_resend_gets_it_after_a_restart(
    make_client: Callable[[str], SyftCoreClient],
    researcher: SyftFlwrRpc,
    events_runner: EventsRunner,
) -> None:
    runs: list[str] = []
    do = make_client(DO)
    ev, _ = _data_owner(do, runs)
    events_runner.start(ev)
    _send(researcher, "req-a")
    first = _reply(researcher, "req-a")
    _stop(events_runner, ev)
    state = do.state_dir(APP)
    # One copy of the reply on the data owner's disk: the ledger's.
    stored = [p.relative_to(state).as_posix() for p in state.rglob("*.reply")]
    assert stored == ["replies/req-a.reply"]
    assert not (state / "reply_cache").exists()
    researcher.finish(DO, EP, "req-a")

    # The researcher crashed and resumed: the same work under a new id, to a
    # data owner that was restarted too (new loop, same disk).
    ev2, h2 = _data_owner(make_client(DO), runs)
    events_runner.start(ev2)
    _send(researcher, "req-b")
    again = _reply(researcher, "req-b")
    assert runs == ["req-a"]  # the ClientApp ran once
    assert h2.from_cache == 1
    assert again.metadata.reply_to_message_id == "req-b"
    assert again.content["metrics"]["run"] == first.content["metrics"]["run"] == 1
    # New work is new work.
    _send(researcher, "req-c", value=2.0)
    _reply(researcher, "req-c")
    assert runs == ["req-a", "req-c"]


def test_a_resend_with_the_same_id_after_a_restart_gets_the_stored_reply(
    make_client: Callable[[str], SyftCoreClient],
    researcher: SyftFlwrRpc,
    events_runner: EventsRunner,
) -> None:
    runs: list[str] = []
    ev, _ = _data_owner(make_client(DO), runs)
    events_runner.start(ev)
    _send(researcher, "same-id")
    _reply(researcher, "same-id")
    _stop(events_runner, ev)
    researcher.finish(DO, EP, "same-id")  # read, then the same request again
    ev2, _ = _data_owner(make_client(DO), runs)
    events_runner.start(ev2)
    _send(researcher, "same-id")
    assert _reply(researcher, "same-id").content["metrics"]["run"] == 1  # not a 409
    assert runs == ["same-id"]


def test_an_undelivered_reply_is_kept_durably_and_sent_after_a_restart(
    make_client: Callable[[str], SyftCoreClient],
    researcher: SyftFlwrRpc,
    datasites_dir: Path,
    events_runner: EventsRunner,
) -> None:
    runs: list[str] = []
    do = make_client(DO)
    ev, _ = _data_owner(do, runs)
    folder = datasites_dir / DO / "app_data" / APP / "rpc" / EP / DS
    obstacle = folder / "blocked.response"
    obstacle.mkdir(parents=True)  # every write of the reply fails
    _send(researcher, "blocked")
    events_runner.start(ev)
    wait_until(lambda: runs == ["blocked"] and "blocked" in ev._retries, timeout=10)
    _stop(events_runner, ev)  # stops with the reply still unsent
    assert Ledger(do.state_dir(APP)).stored_reply("blocked") is not None
    shutil.rmtree(obstacle)

    ev2, h2 = _data_owner(make_client(DO), runs)
    events_runner.start(ev2)
    assert _reply(researcher, "blocked", timeout=15).content["metrics"]["run"] == 1
    assert runs == ["blocked"] and h2.handled == 0  # kept, not recomputed
    # The ledger is marked just after the reply file is written: wait for it.
    wait_until(lambda: ev2.ledger.state("blocked") == "replied", timeout=5)


def test_a_reply_cache_of_an_older_version_is_still_read(tmp_path: Path) -> None:
    runs: list[str] = []
    legacy = tmp_path / "reply_cache"
    old = ClientAppHandler(_app(runs), email=DO, reply_cache=ReplyCache(legacy))
    old(_train_request("x"))
    cache = ReplyCache.on_ledger(Ledger(tmp_path), legacy=legacy)
    h = ClientAppHandler(_app(runs), email=DO, reply_cache=cache)
    h(_train_request("y"))
    assert runs == ["x"] and h.from_cache == 1
    # Without a serving loop a ledger cache keeps the reply under the alias.
    h(_train_request("z", value=3.0))
    h2 = ClientAppHandler(
        _app(runs), email=DO, reply_cache=ReplyCache.on_ledger(Ledger(tmp_path))
    )
    h2(_train_request("w", value=3.0))
    assert runs == ["x", "z"] and h2.from_cache == 1


def test_the_loop_keeps_the_alias_unless_the_handler_overran(tmp_path: Path) -> None:
    from syft_flwr.data_owner.loop import RequestInfo, _current, _ReplyKeep

    led = Ledger(tmp_path)
    cache = ReplyCache.on_ledger(led)

    def put_inside(keep: _ReplyKeep) -> None:
        info = RequestInfo(
            id="m",
            sender=DS,
            endpoint=EP,
            created="",
            expires="",
            headers={},
            encrypted=False,
            ledger=led,
            _keep=keep,
        )
        token = _current.set(info)
        try:
            cache.put("fp-open", b"reply")
        finally:
            _current.reset(token)

    serving = _ReplyKeep()
    put_inside(serving)
    assert led.alias_reply("fp-open") is None  # the loop stores it, once
    assert serving.close() == "fp-open"
    gave_up = _ReplyKeep()
    gave_up.close()  # the loop answered 504 at the deadline and moved on
    put_inside(gave_up)
    assert led.alias_reply("fp-open") == (200, b"reply")  # kept by the cache itself
