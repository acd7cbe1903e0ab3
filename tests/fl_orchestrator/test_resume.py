"""Resume after a crash: the researcher's journal and the data owner's reply cache."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from syft_flwr._flwr_compat import set_message_id, set_routing, set_task_identity
from syft_flwr.client import MemoryClient
from syft_flwr.config import Settings
from syft_flwr.data_owner.handler import ClientAppHandler
from syft_flwr.data_owner.runner import run_data_owner
from syft_flwr.errors import CheckpointError
from syft_flwr.ids import node_id_for
from syft_flwr.project import load_component, load_project
from syft_flwr.researcher.grid import SyftGrid
from syft_flwr.researcher.journal import (
    Journal,
    ReplyCache,
    request_fingerprint,
    request_fingerprints,
)
from syft_flwr.researcher.runner import run_researcher
from syft_flwr.serde import bytes_to_flower_message, flower_message_to_bytes
from syft_flwr.transports.memory import MemoryHub

TOY = Path(__file__).resolve().parents[1] / "assets" / "toy_app"
DS = "researcher@example.org"
OWNERS = ["do1@example.org", "do2@example.org"]


class Crash(Exception):
    """Stands in for the researcher dying mid-run."""


class CrashingGrid(SyftGrid):
    """Dies when the ServerApp makes its ``crash_at``-th ``send_and_receive`` call."""

    def __init__(self, *args, crash_at: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.crash_at = crash_at
        self.calls = 0

    def send_and_receive(self, messages, *, timeout=None):
        self.calls += 1
        if self.calls == self.crash_at:
            raise Crash("researcher died")
        return super().send_and_receive(messages, timeout=timeout)


def _run(tmp: Path, hub: MemoryHub, rounds: int, *, crash_at=None, fresh=False):
    """One researcher run against two data-owner threads; returns (out, handlers)."""
    cfg = load_project(TOY)
    server_app = load_component(cfg.serverapp, cfg.app_dir)
    client_app = load_component(cfg.clientapp, cfg.app_dir)
    settings = Settings(poll_interval=0.5)
    rc = dict(cfg.app_config, **{"num-server-rounds": rounds})
    handlers: dict[str, ClientAppHandler] = {}
    threads = []
    for i, email in enumerate(OWNERS):

        def serve(email=email, i=i):
            handlers[email] = run_data_owner(
                client_app,
                "flwr/toy",
                client=MemoryClient(email, hub, state_dir=tmp / email),
                aggregators=[DS],
                run_config=rc,
                node_config={"partition-id": i, "num-partitions": 2},
                settings=settings,
            )

        th = threading.Thread(target=serve, daemon=True)
        th.start()
        threads.append(th)
    client = MemoryClient(DS, hub, state_dir=tmp / DS)
    grid = (
        None
        if crash_at is None
        else CrashingGrid("flwr/toy", OWNERS, client=client, crash_at=crash_at)
    )
    kwargs = dict(client=client, run_config=rc, settings=settings, stop_wait=5)
    try:
        ctx = run_researcher(
            server_app, "flwr/toy", OWNERS, grid=grid, fresh=fresh, **kwargs
        )
    finally:
        for th in threads:
            th.join(timeout=10)
    return ctx, handlers


def _trains(handlers: dict[str, ClientAppHandler], run_id: int) -> list[int]:
    return [
        handlers[e].context_for(run_id).state["calls"]["n"]
        if "calls" in handlers[e].context_for(run_id).state
        else 0
        for e in OWNERS
    ]


def test_rerun_after_a_crash_continues_from_the_next_round(tmp_path, capsys):
    hub = MemoryHub(max_file_size=4 * 1024 * 1024)
    # Calls: train 1, evaluate 1, train 2, evaluate 2 (dies here), ...
    with pytest.raises(Crash):
        _run(tmp_path, hub, 4, crash_at=4)
    journal = tmp_path / DS / "flwr_toy" / "resume"
    assert len(list(journal.glob("*.exchange"))) == 3
    capsys.readouterr()
    ctx, handlers = _run(tmp_path, hub, 4)
    out = capsys.readouterr()
    # The same final model as an uninterrupted run (4 rounds of +1.0)...
    assert '"final_mean": 4.0' in out.out
    # ...with only rounds 3 and 4 trained for real: rounds 1-2 came from disk.
    assert _trains(handlers, ctx.run_id) == [2, 2]
    # A completed run leaves no checkpoint: the next command starts over.
    assert not journal.exists()


def test_fresh_starts_over(tmp_path, capsys):
    hub = MemoryHub(max_file_size=4 * 1024 * 1024)
    with pytest.raises(Crash):
        _run(tmp_path, hub, 3, crash_at=4)
    ctx, handlers = _run(tmp_path, hub, 3, fresh=True)
    assert '"final_mean": 3.0' in capsys.readouterr().out
    assert _trains(handlers, ctx.run_id) == [3, 3]


def test_other_run_config_is_a_new_run(tmp_path, capsys):
    hub = MemoryHub(max_file_size=4 * 1024 * 1024)
    with pytest.raises(Crash):
        _run(tmp_path, hub, 3, crash_at=4)
    ctx, handlers = _run(tmp_path, hub, 2)  # another num-server-rounds
    assert '"final_mean": 2.0' in capsys.readouterr().out
    assert _trains(handlers, ctx.run_id) == [2, 2]


def test_journal_refuses_a_corrupt_file_and_discards_another_key(tmp_path):
    j = Journal(tmp_path / "j", "key-a")
    j.begin(7)
    j.record([("fp1", b"reply"), ("fp2", None)])
    j.flush()
    again = Journal(tmp_path / "j", "key-a")
    assert again.run_id == 7 and again.resuming
    assert again.replay(["fp2", "fp1"]) == [None, b"reply"]
    assert again.replay(["fp1"]) is None  # used up: live from here
    other = Journal(tmp_path / "j", "key-b")
    assert other.run_id is None and not other.resuming
    j = Journal(tmp_path / "j", "key-a")
    j.begin(1)
    j.record([("fp1", b"old")])
    j.flush()
    j = Journal(tmp_path / "j", "key-a")
    j.begin(2)  # an explicit other run id: the old records are not replayed
    assert Journal(tmp_path / "j", "key-a").replay(["fp1"]) is None
    j = Journal(tmp_path / "j", "key-a")
    j.begin(8)
    (tmp_path / "j" / "00000000.exchange").write_bytes(b"\x00\x00\x00\x09garbage")
    with pytest.raises(CheckpointError, match="--fresh"):
        Journal(tmp_path / "j", "key-a")
    assert Journal(tmp_path / "j", "key-a", fresh=True).run_id is None


def _request(dst: int, value: float, message_id: str) -> Message:
    set_task_identity(5)
    msg = Message(
        RecordDict(
            {
                "arrays": ArrayRecord([__import__("numpy").full(3, value)]),
                "config": ConfigRecord({"server-round": 2}),
            }
        ),
        dst_node_id=dst,
        message_type="train",
        group_id="2",
    )
    set_routing(msg, run_id=5, src_node_id=1)
    set_message_id(msg, message_id)
    return msg


def test_data_owner_answers_a_resent_request_from_its_reply_cache(tmp_path):
    runs: list[str] = []
    app = ClientApp()

    @app.train()
    def train(msg: Message, context):
        runs.append(msg.metadata.message_id)
        return Message(
            RecordDict({"metrics": MetricRecord({"num-examples": len(runs)})}),
            reply_to=msg,
        )

    email = "do1@example.org"
    nid = node_id_for(email)
    cache = tmp_path / "replies"
    h = ClientAppHandler(app, email=email, reply_cache=ReplyCache(cache))
    first = bytes_to_flower_message(h(flower_message_to_bytes(_request(nid, 1.0, "a"))))
    # The resumed researcher re-sends the same request under a new message id,
    # to a data owner that was restarted too (a new handler, the same disk).
    h2 = ClientAppHandler(app, email=email, reply_cache=ReplyCache(cache))
    again = bytes_to_flower_message(
        h2(flower_message_to_bytes(_request(nid, 1.0, "b")))
    )
    assert runs == ["a"]  # the ClientApp ran once
    assert again.metadata.reply_to_message_id == "b"
    assert again.content["metrics"]["num-examples"] == 1
    assert again.metadata.message_id != first.metadata.message_id
    assert h2.from_cache == 1 and h2.succeeded == 1
    # Other content (the next round's model) is new work.
    h2(flower_message_to_bytes(_request(nid, 2.0, "c")))
    assert runs == ["a", "c"]


def test_fingerprint_ignores_message_id_and_creation_time():
    a = _request(7, 1.0, "x")
    b = _request(7, 1.0, "y")
    assert request_fingerprint(a) == request_fingerprint(b)
    assert request_fingerprint(a, with_sender=True) == request_fingerprint(
        b, with_sender=True
    )
    assert request_fingerprint(a) != request_fingerprint(_request(8, 1.0, "x"))
    assert request_fingerprint(a) != request_fingerprint(_request(7, 1.5, "x"))


def test_fingerprints_of_a_broadcast_hash_the_shared_content_once(monkeypatch):
    set_task_identity(5)
    shared = _request(7, 1.0, "x").content
    msgs = [
        Message(shared, dst_node_id=n, message_type="train", group_id="2")
        for n in (7, 8, 9)
    ]
    msgs.append(_request(7, 1.5, "own"))  # its own content
    msgs.append(Message(shared, dst_node_id=7, message_type="evaluate", group_id="2"))
    expected = [request_fingerprint(m) for m in msgs]
    reads: list[int] = []
    real = RecordDict.object_id

    def counting(self):
        reads.append(id(self))
        return real.fget(self)

    monkeypatch.setattr(RecordDict, "object_id", property(counting))
    assert request_fingerprints(msgs) == expected
    assert sorted(reads) == sorted([id(shared), id(msgs[3].content)])
    assert len(set(expected)) == len(expected)  # every request its own print


def test_reply_cache_keeps_only_the_newest(tmp_path):
    c = ReplyCache(tmp_path, keep=2)
    for i in range(4):
        msg = _request(7, float(i), f"m{i}")
        c.put(f"fp{i}", Message(RecordDict(), reply_to=msg))
    assert sorted(p.name for p in tmp_path.glob("*.reply")) == [
        "fp2.reply",
        "fp3.reply",
    ]
    assert c.get("fp0") is None and c.get("fp3") is not None


def test_journal_writes_a_large_reply_from_its_own_buffers(tmp_path):
    import numpy as np

    from syft_flwr.serde import bytes_to_flower_message

    ins = _request(1234, 1.0, "m-big")
    weights = np.arange(600_000, dtype=np.float32)  # 2.4 MB: a framed body
    reply = Message(RecordDict({"arrays": ArrayRecord([weights])}), reply_to=ins)
    j = Journal(tmp_path / "j", "k")
    j.begin(3)
    j.record([("fp", reply), ("none", None)])
    j.flush()
    size = sum(f.stat().st_size for f in (tmp_path / "j").glob("*.exchange"))
    assert weights.nbytes < size < weights.nbytes + 4096
    body, nothing = Journal(tmp_path / "j", "k").replay(["fp", "none"])
    assert nothing is None
    got = bytes_to_flower_message(body)
    assert np.array_equal(
        got.content.array_records["arrays"].to_numpy_ndarrays()[0], weights
    )


def test_journal_records_are_written_in_order_off_the_callers_path(tmp_path):
    j = Journal(tmp_path / "j", "k")
    j.begin(4)
    for i in range(20):
        j.record([(f"fp{i}", f"reply {i}".encode())])
    j.flush()
    names = sorted(p.name for p in (tmp_path / "j").glob("*.exchange"))
    assert names == [f"{i:08d}.exchange" for i in range(20)]
    again = Journal(tmp_path / "j", "k")
    assert [again.replay([f"fp{i}"]) for i in range(20)] == [
        [f"reply {i}".encode()] for i in range(20)
    ]


def test_a_journal_write_that_fails_is_reported(tmp_path):
    j = Journal(tmp_path / "j", "k")
    j.begin(4)
    (tmp_path / "j" / "00000000.exchange").mkdir()  # the record cannot be written
    j.record([("fp", b"x")])
    with pytest.raises(CheckpointError, match="could not write the resume checkpoint"):
        j.flush()


def _big_request(value: float, message_id: str, content_id: str | None) -> bytes:
    """A framed request (a 1.2 MB array) naming ``content_id`` as its content."""
    import numpy as np

    from syft_flwr.serde import split_message

    msg = _request(node_id_for("do1@example.org"), value, message_id)
    msg.content["arrays"] = ArrayRecord([np.full(300_000, value, dtype=np.float32)])
    return split_message(msg, content_id=content_id).inline()


def test_data_owner_uses_the_content_hash_the_request_names(tmp_path):
    from syft_flwr.wire import frames

    runs: list[str] = []
    app = ClientApp()

    @app.train()
    def train(msg: Message, context):
        runs.append(msg.metadata.message_id)
        return Message(RecordDict({"m": MetricRecord({"n": len(runs)})}), reply_to=msg)

    h = ClientAppHandler(
        app, email="do1@example.org", reply_cache=ReplyCache(tmp_path / "r")
    )
    body = _big_request(1.0, "a", "ab" * 32)
    assert frames.content_id(body) == "ab" * 32
    h(body)
    # The named hash is what the data owner goes by (no second pass over the
    # arrays): the same name is the same request, even re-sent under a new id...
    h(_big_request(1.0, "b", "ab" * 32))
    assert runs == ["a"] and h.from_cache == 1
    # ...and another name is new work.
    h(_big_request(1.0, "c", "cd" * 32))
    assert runs == ["a", "c"]
    # Without a name the data owner hashes the content itself, as before.
    h(_big_request(1.0, "d", None))
    assert runs == ["a", "c", "d"]


def test_fingerprint_takes_a_named_content_hash_and_the_sender():
    a = _request(7, 1.0, "x")
    named = request_fingerprint(a, with_sender=True, content_id=a.content.object_id)
    assert named == request_fingerprint(a, with_sender=True)
    one = request_fingerprint(a, with_sender=True, sender="ds@example.org")
    other = request_fingerprint(a, with_sender=True, sender="eve@example.org")
    assert one != other != named  # a sender only ever finds its own replies


# -- the journal is authenticated private state ----------------------------------
def _tamper_replies(journal: Path, value: float) -> int:
    """Rewrite every recorded reply's arrays to ``value``, as an attacker would.

    The attacker knows the format (it is open source) and re-packs each file; it
    cannot compute the tag, so it keeps the old one. Returns the replies changed.
    """
    import numpy as np

    from syft_flwr.researcher.journal import _pack, _unpack

    changed = 0
    for f in sorted(journal.glob("*.exchange")):
        data = f.read_bytes()
        body, tag = data[:-32], data[-32:]
        entries = []
        for fp, reply in _unpack(body, journal / "parts"):
            if reply is not None:
                msg = bytes_to_flower_message(reply)
                for name, rec in msg.content.array_records.items():
                    arrays = rec.to_numpy_ndarrays()
                    msg.content[name] = ArrayRecord(
                        [np.full_like(a, value) for a in arrays]
                    )
                    changed += 1
                reply = flower_message_to_bytes(msg)
            entries.append((fp, reply))
        f.write_bytes(b"".join(bytes(p) for p in _pack(entries)) + tag)
    return changed


def test_rewritten_replies_in_a_crashed_runs_journal_are_never_replayed(
    tmp_path, capsys, caplog
):
    hub = MemoryHub(max_file_size=4 * 1024 * 1024)
    with pytest.raises(Crash):
        _run(tmp_path, hub, 4, crash_at=4)
    journal = tmp_path / DS / "flwr_toy" / "resume"
    assert json.loads((journal / "run.json").read_text())["tag"]  # authenticated
    assert _tamper_replies(journal, 1000.0) == 4  # train rounds 1 and 2, 2 owners
    capsys.readouterr()
    writes = hub.writes
    with pytest.raises(CheckpointError, match="integrity check.*--fresh"):
        _researcher_only(tmp_path, hub, 4)
    assert hub.writes == writes  # refused before anything was sent
    # Refused with its reason in the log; nothing was replayed or trained, and
    # no result came out of the tampered journal.
    assert "failed its integrity check" in caplog.text
    assert "nothing of it was replayed" in caplog.text
    out = capsys.readouterr().out
    assert "TOY_RESULT" not in out
    assert journal.exists()  # kept for inspection until --fresh
    # Starting over gives the honest result (4 rounds of +1.0), not 1002.0.
    ctx, handlers = _run(tmp_path, hub, 4, fresh=True)
    assert '"final_mean": 4.0' in capsys.readouterr().out
    assert _trains(handlers, ctx.run_id) == [4, 4]


def _researcher_only(tmp: Path, hub: MemoryHub, rounds: int) -> None:
    """The researcher's command alone (it stops before any data owner is asked)."""
    cfg = load_project(TOY)
    server_app = load_component(cfg.serverapp, cfg.app_dir)
    rc = dict(cfg.app_config, **{"num-server-rounds": rounds})
    client = MemoryClient(DS, hub, state_dir=tmp / DS)
    run_researcher(server_app, "flwr/toy", OWNERS, client=client, run_config=rc)


def _keyed(path: Path, keys, owner: str = DS, **kw) -> Journal:
    from syft_flwr.crypto.state_mac import StateKey

    return Journal(path, "k", state_key=StateKey(keys, "journal"), owner=owner, **kw)


def test_a_journal_copied_from_another_researcher_is_refused(tmp_path, caplog):
    import shutil

    from syft_flwr.crypto.keys import generate_keys

    theirs, mine = generate_keys(), generate_keys()
    j = _keyed(tmp_path / "theirs", theirs, owner="other@example.org")
    j.begin(7)
    j.record([("fp1", b"their reply")])
    j.flush()
    # Copied as is: another researcher's key (and name) does not verify.
    shutil.copytree(tmp_path / "theirs", tmp_path / "mine")
    with pytest.raises(CheckpointError, match="integrity check"):
        _keyed(tmp_path / "mine", mine)
    assert "nothing of it was replayed" in caplog.text
    # Nor with its run record re-labelled with this researcher's name.
    meta = json.loads((tmp_path / "mine" / "run.json").read_text())
    meta["owner"] = DS
    (tmp_path / "mine" / "run.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="integrity check"):
        _keyed(tmp_path / "mine", mine)
    # Their own researcher still resumes from it.
    again = _keyed(tmp_path / "theirs", theirs, owner="other@example.org")
    assert again.replay(["fp1"]) == [b"their reply"]


def test_journal_entries_of_another_run_do_not_verify(tmp_path):
    from syft_flwr.crypto.keys import generate_keys

    keys = generate_keys()
    j = _keyed(tmp_path / "j", keys)
    j.begin(7)
    j.record([("fp1", b"run 7 reply")])
    j.flush()
    old = (tmp_path / "j" / "00000000.exchange").read_bytes()
    j = _keyed(tmp_path / "j", keys)
    j.begin(8)  # another run of the same app, data owners and config
    j.record([("fp1", b"run 8 reply")])
    j.flush()
    # Planting run 7's record into run 8 (as its next file) is refused.
    (tmp_path / "j" / "00000001.exchange").write_bytes(old)
    with pytest.raises(CheckpointError, match="00000001.exchange failed"):
        _keyed(tmp_path / "j", keys)
    # Renaming a genuine record (reordering the run) is refused too.
    (tmp_path / "j" / "00000001.exchange").unlink()
    (tmp_path / "j" / "00000000.exchange").rename(tmp_path / "j" / "00000003.exchange")
    with pytest.raises(CheckpointError, match="00000003.exchange failed"):
        _keyed(tmp_path / "j", keys)


def test_an_untagged_journal_is_refused_with_a_clear_message(tmp_path, caplog):
    from syft_flwr.crypto.keys import generate_keys

    keys = generate_keys()
    # A journal written by the version before authentication (format 2).
    folder = tmp_path / "j"
    folder.mkdir()
    (folder / "run.json").write_text(
        json.dumps({"version": 2, "key": "k", "run_id": 7})
    )
    with pytest.raises(CheckpointError, match="another version.*--fresh"):
        _keyed(folder, keys)
    # One written without a key (encryption was off) is not trusted once keys
    # exist, and one written with a key is not read without it.
    plain = Journal(tmp_path / "p", "k", owner=DS)
    plain.begin(7)
    plain.record([("fp", b"x")])
    plain.flush()
    with pytest.raises(CheckpointError, match="no integrity tag"):
        _keyed(tmp_path / "p", keys)
    keyed = _keyed(tmp_path / "q", keys)
    keyed.begin(7)
    with pytest.raises(CheckpointError, match="identity key this researcher"):
        Journal(tmp_path / "q", "k", owner=DS)
    assert "nothing of it was replayed" in caplog.text
    # --fresh always starts over.
    assert _keyed(folder, keys, fresh=True).run_id is None
