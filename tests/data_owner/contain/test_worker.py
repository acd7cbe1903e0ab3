"""The ClientApp's worker process: its pipe protocol, deadline and death, attacked.

Real worker processes (level none here: these tests are about the protocol and
the process, the sandbox layers are attacked in ``test_hostile_apps.py``). A
hostile ClientApp finds the worker's reply pipe and writes frames of its own
into it; each must be refused, the worker killed, the request told so in
words, and the next request answered by a fresh worker.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from _hostile_app import write_app
from _support import APP, PLAIN, EventsRunner, wait_until
from flwr.app import ConfigRecord, Message, RecordDict

from syft_flwr._flwr_compat import set_message_id, set_routing, set_task_identity
from syft_flwr.client import SyftCoreClient
from syft_flwr.data_owner.audit import audit_entries
from syft_flwr.data_owner.contain.app import ContainedClientApp
from syft_flwr.data_owner.contain.policy import ContainmentPolicy
from syft_flwr.data_owner.contain.process import WorkerSpec
from syft_flwr.data_owner.handler import ClientAppHandler
from syft_flwr.data_owner.loop import TransportEvents
from syft_flwr.errors import WorkerFailed
from syft_flwr.ids import node_id_for
from syft_flwr.project import load_component
from syft_flwr.serde import bytes_to_flower_message, flower_message_to_bytes
from syft_flwr.wire.mailbox import PlaintextPolicy, SyftFlwrRpc

DS = "ds@example.org"
DO = "do1@example.org"
EP = "messages"
RUN = 7


def request(action: str = "ok", mid: str = "req-1", **cfg: object) -> Message:
    set_task_identity(RUN, 1)
    msg = Message(
        RecordDict({"config": ConfigRecord({"action": action, **cfg})}),  # type: ignore[dict-item]
        dst_node_id=node_id_for(DO),
        message_type="train",
    )
    set_message_id(msg, mid)
    set_routing(msg, run_id=RUN, src_node_id=1)
    return msg


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "app"
    write_app(folder)
    return folder


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "data.csv").write_text("a\nb\nc\n")
    monkeypatch.setenv("DATA_DIR", str(folder))
    return folder


def spec_for(app_dir: Path, level: str = "none") -> WorkerSpec:
    return WorkerSpec(
        app_dir=app_dir,
        ref="hostile.client:app",
        files=None,
        node_id=node_id_for(DO),
        policy=ContainmentPolicy(level=level),  # type: ignore[arg-type]
        max_bytes=1 << 20,
    )


@pytest.fixture
def contained(app_dir: Path, data_dir: Path) -> Iterator[ContainedClientApp]:
    app = ContainedClientApp(spec_for(app_dir))
    app.start()
    yield app
    app.close()


def context() -> object:
    from flwr.app import Context

    return Context(
        run_id=RUN, node_id=node_id_for(DO), node_config={}, state=RecordDict(),
        run_config={},
    )  # fmt: skip


def metrics(reply: Message) -> dict[str, float]:
    return dict(reply.content["m"])  # type: ignore[arg-type]


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_a_well_behaved_app_gives_the_same_result_as_in_process(
    contained: ContainedClientApp, app_dir: Path
) -> None:
    in_process = load_component("hostile.client:app", app_dir)
    ctx = context()
    here = [in_process(message=request(mid=f"h{i}"), context=ctx) for i in range(2)]
    there = [
        contained(message=request(mid=f"w{i}"), context=context()) for i in range(2)
    ]
    # Same values; the Context's state survives rounds in the warm worker.
    assert [metrics(r) for r in there] == [metrics(r) for r in here]
    assert [metrics(r)["n"] for r in there] == [1, 2] and metrics(there[0])["rows"] == 3
    assert contained.summary == "none"


@pytest.mark.parametrize(
    ("action", "words"),
    [
        ("oversized", "over the limit"),
        ("garbled", "not a Flower message"),
        ("bad_json", "not JSON"),
        ("wrong_kind", "unexpected frame"),
    ],
)
def test_a_hostile_frame_is_refused_the_worker_killed_and_the_next_request_answered(
    contained: ContainedClientApp,
    action: str,
    words: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="syft_flwr")
    contained(message=request(mid="warm"), context=context())
    old = contained._worker
    assert old is not None
    with pytest.raises(WorkerFailed, match=words):
        contained(message=request(action, mid="evil"), context=context())
    assert "the ClientApp's worker was stopped" in caplog.text
    assert gone(old.pid) and not old.scratch.exists()
    # A fresh worker (a fresh Context: n starts again) answers the next one.
    reply = contained(message=request(mid="next"), context=context())
    assert metrics(reply)["n"] == 1 and contained._worker is not old


def test_a_reply_claiming_other_ids_is_rebuilt_from_the_request(
    contained: ContainedClientApp,
) -> None:
    req = request("forge", mid="asked")
    reply = contained(message=req, context=context())
    md = reply.metadata
    assert md.reply_to_message_id == "asked" and md.message_type == "train"
    assert md.dst_node_id == 1 and md.src_node_id == node_id_for(DO)
    assert md.run_id == RUN and metrics(reply)["n"] == -1  # its content, our ids


def test_a_worker_that_dies_is_named_and_replaced(
    contained: ContainedClientApp, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="syft_flwr")
    with pytest.raises(WorkerFailed, match=r"killed by signal 9 \(SIGKILL\)"):
        contained(message=request("die"), context=context())
    assert "worker was stopped" in caplog.text
    assert metrics(contained(message=request(), context=context()))["n"] == 1


def test_an_app_that_raises_keeps_its_warm_worker(
    contained: ContainedClientApp,
) -> None:
    contained(message=request(), context=context())
    worker = contained._worker
    with pytest.raises(Exception, match="the app failed on purpose") as info:
        contained(message=request("raise"), context=context())
    assert type(info.value).__name__ == "ValueError"  # the app's own type name
    assert contained._worker is worker  # not restarted: the Context lives on
    assert metrics(contained(message=request(), context=context()))["n"] == 3


def test_the_worker_sees_no_secrets_of_the_data_owner(
    app_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SYFT_FLWR_SECRET_FOR_TEST", "private")
    app = ContainedClientApp(spec_for(app_dir))
    app.start()
    try:
        worker = app._worker
        assert worker is not None
        env = Path(f"/proc/{worker.pid}/environ").read_bytes().split(b"\0")
        names = {e.split(b"=", 1)[0] for e in env if e}
        assert not any(n.startswith(b"SYFT") for n in names)
        assert f"HOME={worker.scratch}".encode() in env
    finally:
        app.close()
    assert gone(worker.pid) and not worker.scratch.exists()


# --- through the data owner's serving loop -----------------------------------


@pytest.fixture
def researcher(make_client: Callable[[str], SyftCoreClient]) -> Iterator[SyftFlwrRpc]:
    c = make_client(DS)
    rpc = SyftFlwrRpc(c.make_transport(), APP, settings=PLAIN, policy=PlaintextPolicy())
    yield rpc
    rpc.transport.close()


def serving(client: SyftCoreClient, app: ContainedClientApp) -> TransportEvents:
    from syft_flwr.data_owner.runner import _audited

    ev = TransportEvents(APP, client, settings=PLAIN, poll_interval=0.25)
    ev.drain_timeout = 0.0
    ev.on_request(EP, _audited(ClientAppHandler(app, email=DO), app))
    return ev


def test_an_app_past_its_deadline_is_killed_and_the_next_request_runs_at_once(
    make_client: Callable[[str], SyftCoreClient],
    researcher: SyftFlwrRpc,
    events_runner: EventsRunner,
    contained: ContainedClientApp,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="syft_flwr")
    do = make_client(DO)
    ev = serving(do, contained)
    events_runner.start(ev)
    hung = contained._worker
    assert hung is not None
    body = flower_message_to_bytes(request("sleep", mid="slow"))
    sent = time.time()
    slow = researcher.send_request(DO, EP, body, expires_at=sent + 3, message_id="slow")
    r1 = wait_until(lambda: researcher.response_for(DO, EP, slow), timeout=15)
    answered = time.time()
    err = bytes_to_flower_message(r1.body).error
    assert "ClientApp raised ClientAppStopped" in err.reason
    assert answered - sent < 5  # at the TTL, not after the app's 30 s sleep
    assert gone(hung.pid)
    nxt = researcher.send_request(
        DO, EP, flower_message_to_bytes(request(mid="next")),
        expires_at=time.time() + 30, message_id="next",
    )  # fmt: skip
    r2 = wait_until(lambda: researcher.response_for(DO, EP, nxt), timeout=15)
    assert time.time() - answered < 3  # a fresh worker, no waiting on the hung one
    assert metrics(bytes_to_flower_message(r2.body))["n"] == 1
    events_runner.stop(ev)
    runs = {e["id"]: e for e in audit_entries(do) if e["event"] == "run"}
    assert runs["slow"]["containment"] == "none" and runs["slow"]["outcome"] == "error"
    assert runs["slow"]["worker"] == "stopped at the deadline"
    assert runs["next"]["containment"] == "none" and runs["next"]["outcome"] == "ok"
    assert "the ClientApp's worker was stopped: stopped at the deadline" in caplog.text


def test_an_approved_file_changed_on_disk_is_never_imported(
    app_dir: Path, tmp_path: Path
) -> None:
    import hashlib
    from dataclasses import replace

    from syft_flwr.errors import ConfigError

    files = {
        rel: hashlib.sha256((app_dir / rel).read_bytes()).hexdigest()
        for rel in ("hostile/__init__.py", "hostile/client.py")
    }
    marker = tmp_path / "ran"
    client_py = app_dir / "hostile" / "client.py"
    # Changed after approval: the worker re-reads and re-hashes before importing.
    client_py.write_text(
        f"open({str(marker)!r}, 'w').write('ran')\n" + client_py.read_text()
    )
    app = ContainedClientApp(replace(spec_for(app_dir), files=files))
    with pytest.raises(
        ConfigError, match=r"hostile/client.py is not the approved file"
    ):
        app.start()
    app.close()
    assert not marker.exists()
    # The approved bytes themselves load (from the verified files, not sys.path).
    client_py.write_text(client_py.read_text().split("\n", 1)[1])
    app = ContainedClientApp(replace(spec_for(app_dir), files=files))
    try:
        app.start()
        assert metrics(app(message=request(), context=context()))["n"] == 1
    finally:
        app.close()
