"""Data-owner and researcher runners, in process over the in-memory transport."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode

from syft_flwr._flwr_compat import set_message_id, set_task_identity
from syft_flwr.client import MemoryClient
from syft_flwr.config import Settings
from syft_flwr.data_owner.handler import ClientAppHandler
from syft_flwr.data_owner.runner import run_data_owner
from syft_flwr.ids import node_id_for
from syft_flwr.project import load_component, load_project
from syft_flwr.researcher.runner import run_researcher
from syft_flwr.serde import bytes_to_flower_message, flower_message_to_bytes
from syft_flwr.transports.memory import MemoryHub

TOY = Path(__file__).resolve().parents[1] / "assets" / "toy_app"
DS = "researcher@example.org"


@pytest.fixture(scope="module")
def toy():
    cfg = load_project(TOY)
    return (
        cfg,
        load_component(cfg.serverapp, cfg.app_dir),
        load_component(cfg.clientapp, cfg.app_dir),
    )


def _instruction(
    dst: int, message_type: str = "train", content: RecordDict | None = None
):
    set_task_identity(5)
    msg = Message(content or RecordDict(), dst_node_id=dst, message_type=message_type)
    set_message_id(msg, "m-1")
    return msg


def test_clientapp_exception_becomes_error_reply_without_private_values(toy):
    _, _, client_app = toy
    email = "do1@example.org"
    h = ClientAppHandler(
        client_app,
        email=email,
        node_config={"partition-id": 0},
        run_config={"fail-partition": 0},
    )
    msg = _instruction(node_id_for(email))
    reply = bytes_to_flower_message(h(flower_message_to_bytes(msg)))
    assert reply.has_error()
    assert reply.error.code == ErrorCode.CLIENT_APP_RAISED_EXCEPTION
    assert "ValueError" in reply.error.reason and "train" in reply.error.reason
    assert "123.456" not in reply.error.reason and "Traceback" not in reply.error.reason
    assert reply.metadata.reply_to_message_id == "m-1"
    revealing = ClientAppHandler(
        client_app,
        email=email,
        node_config={"partition-id": 0},
        run_config={"fail-partition": 0},
        reveal_errors=True,
    )
    reply = bytes_to_flower_message(revealing(flower_message_to_bytes(msg)))
    assert "123.456" in reply.error.reason


def test_stop_signal_is_handled_by_the_runner_not_the_clientapp():
    seen: list[str] = []
    app = ClientApp()

    @app.query()
    def q(msg: Message, context):  # pragma: no cover - must not run
        seen.append(msg.metadata.message_type)
        return Message(RecordDict(), reply_to=msg)

    stopped: list[str] = []
    email = "do1@example.org"
    h = ClientAppHandler(app, email=email, on_stop=stopped.append)
    stop = _instruction(
        node_id_for(email),
        "system",
        RecordDict({"config": ConfigRecord({"action": "stop", "reason": "done"})}),
    )
    reply = bytes_to_flower_message(h(flower_message_to_bytes(stop)))
    assert stopped == ["done"] and seen == []
    assert not reply.has_error() and reply.content["ack"]["stopped"] is True
    unknown = _instruction(
        node_id_for(email),
        "system",
        RecordDict({"config": ConfigRecord({"action": "x"})}),
    )
    assert bytes_to_flower_message(h(flower_message_to_bytes(unknown))).has_error()
    assert seen == []


def test_message_for_another_node_is_refused(toy):
    _, _, client_app = toy
    h = ClientAppHandler(client_app, email="do1@example.org")
    reply = bytes_to_flower_message(h(flower_message_to_bytes(_instruction(12345))))
    assert reply.has_error() and "addressed to node 12345" in reply.error.reason


def _start_owners(hub, client_app, emails, run_config, settings, n_total):
    results: dict[str, ClientAppHandler] = {}
    threads = []
    for i, email in enumerate(emails):

        def serve(email=email, i=i):
            results[email] = run_data_owner(
                client_app,
                "flwr/toy",
                client=MemoryClient(email, hub),
                aggregators=[DS],
                run_config=run_config,
                node_config={"partition-id": i, "num-partitions": n_total},
                settings=settings,
            )

        th = threading.Thread(target=serve, daemon=True)
        th.start()
        threads.append(th)
    return results, threads


def test_full_run_persistent_context_and_stop(toy, capsys):
    cfg, server_app, client_app = toy
    hub = MemoryHub(max_file_size=4 * 1024 * 1024)
    settings = Settings(poll_interval=0.5)
    emails = ["do1@example.org", "do2@example.org"]
    rc = dict(cfg.app_config, **{"num-server-rounds": 3})
    results, threads = _start_owners(hub, client_app, emails, rc, settings, 2)
    ctx = run_researcher(
        server_app,
        "flwr/toy",
        emails,
        client=MemoryClient(DS, hub),
        run_config=rc,
        settings=settings,
        stop_wait=5,
    )
    for th in threads:
        th.join(timeout=10)
        assert not th.is_alive(), "data owner did not exit after the stop signal"
    assert '"final_mean": 3.0' in capsys.readouterr().out
    for email in emails:
        h = results[email]
        assert h.stopped_reason == "Training complete"
        c = h.context_for(ctx.run_id)
        assert c.node_id == node_id_for(email)  # the id the researcher uses
        assert c.state["calls"]["n"] == 3  # state kept across rounds
        assert c.run_config["num-server-rounds"] == 3
    # nothing left behind but public keys and the app schemas
    leftovers = [
        k for k in hub.snapshot() if k.endswith((".request", ".response", ".chunk"))
    ]
    assert leftovers == []


def test_data_owner_that_never_starts(toy, capsys):
    cfg, server_app, client_app = toy
    hub = MemoryHub()
    settings = Settings(poll_interval=0.5)
    serving = ["do1@example.org", "do2@example.org"]
    everyone = [*serving, "do3@example.org"]
    rc = dict(cfg.app_config, **{"round-timeout": 1.5, "num-server-rounds": 2})
    _, threads = _start_owners(hub, client_app, serving, rc, settings, 3)
    t0 = time.monotonic()
    run_researcher(
        server_app,
        "flwr/toy",
        everyone,
        client=MemoryClient(DS, hub),
        run_config=rc,
        settings=settings,
        stop_wait=1,
    )
    elapsed = time.monotonic() - t0
    for th in threads:
        th.join(timeout=10)
        assert not th.is_alive()
    # Two rounds x (train + evaluate) each wait out the timeout for do3, then go on.
    assert '"final_mean": 2.0' in capsys.readouterr().out
    assert elapsed < 30
    # do3 never served the app: nothing was ever written into its datasite.
    assert not [k for k in hub.snapshot() if k.startswith("do3@example.org/")]


def test_new_run_withdraws_requests_left_by_a_crashed_researcher():
    from flwr.app import ConfigRecord, MessageType

    from syft_flwr.researcher.grid import SyftGrid

    hub = MemoryHub()
    do = "do1@example.org"
    # The data owner has prepared the app (so requests are written) but is down.
    MemoryClient(do, hub).make_transport().prepare("flwr/toy", "messages", [DS])
    off = Settings(encryption_enabled=False)

    def one_request(grid: SyftGrid) -> str:
        grid.set_run(1)
        msg = grid.create_message(
            RecordDict({"c": ConfigRecord({"x": 1})}),
            MessageType.QUERY,
            grid.get_node_ids()[0],
            "",
        )
        (mid,) = grid.push_messages([msg])
        return mid

    crashed = SyftGrid("flwr/toy", [do], client=MemoryClient(DS, hub), settings=off)
    old = one_request(crashed)  # then the process dies: nothing withdrawn
    folder = f"{do}/app_data/flwr/toy/rpc/messages/{DS}"
    assert f"{folder}/{old}.request" in hub.snapshot()

    fresh = SyftGrid("flwr/toy", [do], client=MemoryClient(DS, hub), settings=off)
    new = one_request(fresh)
    files = [k for k in hub.snapshot() if k.startswith(folder)]
    assert files == [f"{folder}/{new}.request"]


def test_run_where_every_clientapp_call_fails_is_a_failed_run():
    """The ServerApp ends normally, but not one ClientApp call succeeded."""
    from flwr.app import Context, MessageType
    from flwr.serverapp import Grid, ServerApp

    from syft_flwr.errors import RunFailed
    from syft_flwr.researcher.grid import SyftGrid

    client_app = ClientApp()

    @client_app.query()
    def query(msg: Message, context: Context) -> Message:
        raise RuntimeError("no data here")

    server_app = ServerApp()
    seen: list[Message] = []

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        msgs = [
            Message(RecordDict(), dst_node_id=n, message_type=MessageType.QUERY)
            for n in grid.get_node_ids()
        ]
        seen.extend(grid.send_and_receive(msgs, timeout=20))

    hub = MemoryHub()
    settings = Settings(poll_interval=0.5)
    emails = ["do1@example.org", "do2@example.org"]
    results, threads = _start_owners(hub, client_app, emails, {}, settings, 2)
    grid = SyftGrid("flwr/toy", emails, client=MemoryClient(DS, hub), settings=settings)
    with pytest.raises(RunFailed, match="none of the 2 ClientApp calls succeeded"):
        run_researcher(server_app, "flwr/toy", emails, grid=grid, stop_wait=5)
    assert len(seen) == 2 and all(m.has_error() for m in seen)
    assert (grid.tally.sent, grid.tally.succeeded, grid.tally.failed) == (2, 0, 2)
    for th in threads:
        th.join(timeout=10)
        assert not th.is_alive()
    for email in emails:
        h = results[email]
        assert (h.handled, h.succeeded, h.failed) == (1, 0, 1)
        assert h.stopped_outcome == "failed" and "Run failed" in str(h.stopped_reason)
        with pytest.raises(RunFailed, match="all 1 ClientApp calls"):
            h.check_outcome()


def test_one_success_is_enough_for_a_completed_run(toy):
    cfg, server_app, client_app = toy
    hub = MemoryHub()
    settings = Settings(poll_interval=0.5)
    emails = ["do1@example.org", "do2@example.org"]
    # partition 0 fails every train call, partition 1 works
    rc = dict(cfg.app_config, **{"num-server-rounds": 1, "fail-partition": 0})
    results, threads = _start_owners(hub, client_app, emails, rc, settings, 2)
    run_researcher(
        server_app,
        "flwr/toy",
        emails,
        client=MemoryClient(DS, hub),
        run_config=rc,
        settings=settings,
        stop_wait=5,
    )
    for th in threads:
        th.join(timeout=10)
    assert results["do2@example.org"].stopped_outcome == "completed"
    results["do2@example.org"].check_outcome()


def test_data_owner_whose_heartbeat_stops_is_not_waited_for(toy, capsys, caplog):
    from syft_flwr.data_owner.heartbeat import Heartbeat

    cfg, server_app, client_app = toy
    hub = MemoryHub()
    settings = Settings(poll_interval=0.5, heartbeat_interval=0.1, heartbeat_misses=3)
    serving = ["do1@example.org", "do2@example.org"]
    dead = "do3@example.org"
    everyone = [*serving, dead]
    # A long round timeout: only the heartbeat can end the wait for do3.
    rc = dict(cfg.app_config, **{"round-timeout": 600.0, "num-server-rounds": 2})
    _, threads = _start_owners(hub, client_app, serving, rc, settings, 3)
    # do3 served the app and beat a few times, then its process "died": it
    # never answers and its heartbeat stops.
    t3 = MemoryClient(dead, hub).make_transport()
    t3.prepare("flwr/toy", "messages", [DS])
    hb = Heartbeat(t3, "flwr/toy", "messages", [DS], interval=0.1).start()
    threading.Timer(1.0, hb.stop).start()
    with caplog.at_level("INFO", logger="syft_flwr"):
        run_researcher(
            server_app,
            "flwr/toy",
            everyone,
            client=MemoryClient(DS, hub),
            run_config=rc,
            settings=settings,
            stop_wait=1,
        )
    for th in threads:
        th.join(timeout=10)
        assert not th.is_alive()
    assert hb.beats >= 1
    assert '"final_mean": 2.0' in capsys.readouterr().out
    text = caplog.text
    assert f"{dead} stopped answering: no heartbeat" in text
    assert text.count(f"{dead} stopped answering") == 1  # said once, not per round
    assert "timed out" not in text
    # its unanswered requests were withdrawn, not left for a later restart
    assert not [k for k in hub.snapshot() if k.endswith(".request")]


def test_heartbeat_goes_through_the_transport_and_wakes_the_watcher():
    from syft_flwr.data_owner.heartbeat import Heartbeat
    from syft_flwr.transports.base import heartbeat_key

    hub = MemoryHub()
    owner = MemoryClient("do1@example.org", hub).make_transport()
    reader = MemoryClient(DS, hub).make_transport()
    seen = threading.Event()
    reader.watch_heartbeat("do1@example.org", "flwr/toy", "messages", seen.set)
    hb = Heartbeat(owner, "flwr/toy", "messages", [DS], interval=60)
    hb.beat()
    assert seen.wait(5)
    key = heartbeat_key("do1@example.org", "flwr/toy", "messages", DS)
    assert b'"seq": 0' in reader.get(key)


def test_warm_up_waits_for_the_ready_signal_of_every_data_owner(caplog):
    from syft_flwr.data_owner.heartbeat import Heartbeat
    from syft_flwr.researcher.grid import SyftGrid

    hub = MemoryHub()
    owner = MemoryClient("do1@example.org", hub).make_transport()
    grid = SyftGrid("flwr/toy", ["do1@example.org"], client=MemoryClient(DS, hub))
    beat = Heartbeat(owner, "flwr/toy", "messages", [DS], interval=60)

    def start_serving() -> None:
        owner.prepare("flwr/toy", "messages", [DS])
        beat.start()  # the first beat is the ready signal

    threading.Timer(0.3, start_serving).start()
    try:
        grid.warm_up(wait=60)
        # it returned because do1 serves the app now, not because time ran out
        assert owner.is_prepared("do1@example.org", "flwr/toy", "messages")
        assert beat.beats >= 1
    finally:
        beat.stop()
        grid.close()
    late = SyftGrid("flwr/toy", ["do2@example.org"], client=MemoryClient(DS, hub))
    with caplog.at_level("INFO", logger="syft_flwr"):
        late.warm_up(wait=0.3)
    late.close()
    assert "0 of 1 data owners serve the app" in caplog.text
    assert "do2@example.org" in caplog.text
