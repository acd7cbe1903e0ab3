"""Attacks on review records: another researcher's same files, a forged or stale
store record, a flooded inbox. Real SyftBox folders, real keys, real sealing."""

from __future__ import annotations

import json
import logging
import shutil
import threading
from pathlib import Path

import pytest
from _support import make_syft_client

from syft_flwr.client.syft_p2p_client import MemoryClient
from syft_flwr.config import Settings
from syft_flwr.crypto.keys import generate_keys
from syft_flwr.crypto.policy import load_or_create_keys
from syft_flwr.crypto.state_mac import StateKey
from syft_flwr.errors import (
    ConfigError,
    ProjectNotApproved,
    ReviewError,
    RunFailed,
    StateIntegrityError,
)
from syft_flwr.researcher.runner import run_researcher
from syft_flwr.review import api
from syft_flwr.review.records import LEGACY_NOTE
from syft_flwr.review.store import ProjectStore, show_text
from syft_flwr.transports.memory import MemoryHub

TOY = Path(__file__).resolve().parents[1] / "assets" / "toy_app"
A, B, DO = "alice@example.org", "bob@example.org", "do@example.org"
ENC = Settings(encryption_enabled=True, poll_interval=0.25)
SECRET = "cohort too small for site 7 (internal note)"


@pytest.fixture
def app(tmp_path: Path) -> Path:
    dst = tmp_path / "apps" / "toy_app"
    shutil.copytree(TOY, dst)
    return dst


@pytest.fixture
def parties(syft_root: Path):
    a, b = make_syft_client(syft_root, A), make_syft_client(syft_root, B)
    owner = make_syft_client(syft_root, DO)
    load_or_create_keys(owner, owner.make_transport())
    api.receive_projects(owner, settings=ENC)  # opens the review inbox
    return a, b, owner


def _status(client) -> list[tuple[str, str]]:
    return [(s.status, s.reason) for s in api.submission_status(client, settings=ENC)]


def test_same_files_from_another_researcher_never_get_the_first_decision(
    parties, app: Path
):
    a, b, owner = parties
    [sub_a] = api.submit(app, [DO], client=a, settings=ENC)
    [rec_a] = api.receive_projects(owner, settings=ENC)
    api.reject(owner, rec_a.short, SECRET, settings=ENC)
    assert _status(a) == [("rejected", SECRET)]
    # B submits the very same files under B's own key, after the decision.
    [sub_b] = api.submit(app, [DO], client=b, settings=ENC)
    assert sub_b.project_hash == sub_a.project_hash
    [rec_b] = api.receive_projects(owner, settings=ENC)
    assert (rec_b.researcher, rec_b.status, rec_b.reason) == (B, "pending", "")
    assert rec_b.request_key != rec_a.request_key  # A's reply path is not B's
    assert _status(b) == [("pending", "")]  # A's decision and reason never reach B
    assert _status(a) == [("rejected", SECRET)]
    store = api.project_store(owner)
    assert {(r.researcher, r.status) for r in store.records()} == {
        (A, "rejected"),
        (B, "pending"),
    }
    with pytest.raises(ProjectNotApproved, match=f"{A} .rejected., {B} .pending."):
        api.serve(owner, rec_b.short, settings=ENC)
    # Deciding by hash alone is ambiguous now; the data owner names whose it is.
    with pytest.raises(ConfigError, match="submitted by 2 researchers"):
        api.approve(owner, rec_b.short, settings=ENC)
    api.approve(owner, rec_b.short, researcher=B, settings=ENC)
    assert _status(b) == [("approved", "")]
    assert _status(a) == [("rejected", SECRET)]  # A's own record is untouched
    assert "reason:" not in show_text(store, rec_b.short, B)


def test_first_submitter_takes_over_nothing_and_serve_takes_work_only_from_the_approved(
    tmp_path: Path, app: Path, caplog: pytest.LogCaptureFixture
):
    from syft_flwr.project import load_component, load_project

    hub = MemoryHub(max_file_size=4 * 1024 * 1024)
    settings = Settings(poll_interval=0.25)
    a = MemoryClient(A, hub, state_dir=tmp_path / "a")
    b = MemoryClient(B, hub, state_dir=tmp_path / "b")
    owner = MemoryClient(DO, hub, state_dir=tmp_path / "do")
    load_or_create_keys(owner, owner.make_transport())
    api.receive_projects(owner, settings=settings)
    # B submits A's files first, then A.
    [sub_b] = api.submit(app, [DO], client=b, settings=settings)
    api.receive_projects(owner, settings=settings)
    [sub_a] = api.submit(app, [DO], client=a, settings=settings)
    [rec_a] = api.receive_projects(owner, settings=settings)
    assert rec_a.researcher == A and rec_a.status == "pending"
    api.approve(owner, sub_a.project_hash, researcher=A, settings=settings)
    statuses = {
        c.email: [s.status for s in api.submission_status(c, settings=settings)]
        for c in (a, b)
    }
    assert statuses == {A: ["approved"], B: ["pending"]}

    cfg = load_project(app)
    server_app = load_component(cfg.serverapp, cfg.app_dir)
    rc = dict(cfg.app_config, **{"num-server-rounds": 1, "min-nodes": 1})
    rc["round-timeout"] = 5

    def research(who) -> None:
        run_researcher(
            server_app, cfg.flwr_app_name, [DO], client=who, run_config=rc,
            settings=settings, stop_wait=5, project_hash=sub_b.project_hash,
        )  # fmt: skip

    def serve_once() -> tuple[threading.Thread, list]:
        out: list = []
        th = threading.Thread(
            target=lambda: out.append(api.serve(owner, settings=settings)),
            daemon=True,
        )
        th.start()
        return th, out

    # B (approved for nothing) asks for work: refused before anything runs.
    th, out = serve_once()
    with caplog.at_level(logging.WARNING), pytest.raises((RunFailed, IndexError)):
        research(b)
    assert f"{B} is not an allowed sender" in caplog.text
    # A, whose own submission was approved, gets the real result.
    research(a)
    th.join(timeout=20)
    assert not th.is_alive()
    assert out[0].succeeded >= 1 and out[0].refused == 0


def _index(store: ProjectStore) -> dict:
    return json.loads((store.directory / "projects.json").read_text())


def _write_index(store: ProjectStore, doc: dict) -> None:
    (store.directory / "projects.json").write_text(json.dumps(doc))


def test_a_tampered_or_copied_store_record_is_refused_and_never_approved(
    parties, app: Path, caplog: pytest.LogCaptureFixture
):
    a, b, owner = parties
    api.submit(app, [DO], client=a, settings=ENC)
    api.submit(app, [DO], client=b, settings=ENC)
    api.receive_projects(owner, settings=ENC)
    store = api.project_store(owner)
    h = store.records()[0].project_hash
    # Someone with write access to the state folder marks B's record approved.
    doc = _index(store)
    [entry_b] = [e for e in doc["records"] if e["researcher"] == B]
    entry_b["status"] = "approved"
    _write_index(store, doc)
    with caplog.at_level(logging.WARNING, logger="syft_flwr.review"):
        assert not store.is_approved(h, B)
    assert "failed its integrity check" in caplog.text
    assert [r.researcher for r in store.records()] == [A]
    with pytest.raises(StateIntegrityError, match="integrity check"):
        store.get(h, B)
    with pytest.raises(ProjectNotApproved, match="0 approved"):
        api.serve(owner, settings=ENC)
    work = store.directory / "work"
    assert not work.exists()  # nothing was unpacked, nothing imported
    # Deciding A's record keeps B's damaged entry as it was (evidence), untrusted.
    api.approve(owner, h, researcher=A, settings=ENC)
    assert [e for e in _index(store)["records"] if e["researcher"] == B] == [entry_b]
    assert store.approved_researchers(h) == [A]
    # A record copied from another data owner's store (tagged under its key).
    other = ProjectStore(store.directory, key=StateKey(generate_keys(), "review"))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="syft_flwr.review"):
        assert other.records() == [] and not other.is_approved(h, A)
    assert caplog.text.count("failed its integrity check") == 2
    # The whole file damaged: nothing in it counts, and it says so.
    (store.directory / "projects.json").write_text('{"version": 2, "records": [')
    with pytest.raises(StateIntegrityError, match="damaged"):
        store.records()
    from syft_flwr.data_owner.loop import RequestInfo, _current
    from syft_flwr.review.guard import ProjectGuard

    token = _current.set(RequestInfo("m", A, "messages", "", "", {}, encrypted=True))
    try:
        refusal = ProjectGuard(store, h, store.directory)(h)
    finally:
        _current.reset(token)
    assert refusal is not None and "review store cannot be read" in refusal


def test_records_of_the_old_format_need_approval_again(
    parties, app: Path, caplog: pytest.LogCaptureFixture
):
    a, _, owner = parties
    api.submit(app, [DO], client=a, settings=ENC)
    [rec] = api.receive_projects(owner, settings=ENC)
    api.approve(owner, rec.short, settings=ENC)
    store = api.project_store(owner)
    # What the first store format wrote: keyed by hash, no tag, package by hash.
    [entry] = _index(store)["records"]
    del entry["tag"], entry["note"], entry["other_requests"]
    # ... and whoever wrote it points the reply at another app's folder.
    foreign = f"{DO}/app_data/flwr/other/rpc/messages/{A}/0123abcd.request"
    entry["request_key"] = foreign
    _write_index(store, {rec.project_hash: entry})
    pkgs = store.directory / "packages"
    [stored] = pkgs.iterdir()
    stored.rename(pkgs / f"{rec.project_hash}.tar.gz")
    broken = dict(entry, files=[["a.py", 1]])  # not an entry of a manifest
    broken["project_hash"] = "e" * 64
    _write_index(store, {rec.project_hash: entry, "e" * 64: broken})
    with caplog.at_level(logging.WARNING, logger="syft_flwr.review"):
        [old] = store.records()
    assert "need your review again" in caplog.text
    assert "has a field of the wrong kind" in caplog.text  # set aside, not listed
    assert (old.status, old.note) == ("pending", LEGACY_NOTE)
    assert _index(store)["version"] == 2  # upgraded once, durably, as pending
    assert not store.is_approved(rec.project_hash, A)
    with pytest.raises(ProjectNotApproved, match="0 approved"):
        api.serve(owner, settings=ENC)
    assert LEGACY_NOTE in show_text(store, rec.short)  # the code is still there
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="syft_flwr.review"):
        api.approve(owner, rec.short, settings=ENC)
    [again] = store.records()
    assert (again.status, again.note) == ("approved", "")
    assert f"could not tell {A}" in caplog.text and "not a submission of" in caplog.text
    other_app = owner.make_transport().list(f"{DO}/app_data/flwr/other")
    assert other_app == []  # nothing written outside the review inbox


def test_a_decision_for_another_researcher_is_not_believed(parties, app: Path):
    a, _, owner = parties
    [sub] = api.submit(app, [DO], client=a, settings=ENC)
    [rec] = api.receive_projects(owner, settings=ENC)
    from syft_flwr.transports.base import RpcPath

    rpc = api._rpc(owner, owner.make_transport(), ENC)
    with pytest.raises(ReviewError, match="not a submission of"):  # refuses to
        api._reply(rpc, rec.request_key, rec.expires, sub.project_hash, B, "ok", "")
    # Sealed by the real data owner, for A's request, but naming someone else
    # (what a store keyed by hash alone sent when B took the record over).
    body = {"status": "approved", "reason": "", "project_hash": sub.project_hash}
    rpc.send_response(
        RpcPath.parse(rec.request_key),
        expires=rec.expires,
        body=json.dumps(body | {"researcher": B}).encode(),
    )
    # A data owner on an older syft_flwr names no researcher: not believed either.
    [sub2] = api.submit(app, [DO], client=a, settings=ENC)
    key2 = rpc.head_key(DO, api.REVIEW_ENDPOINT, A, sub2.request_id, "request")
    rpc.send_response(
        RpcPath.parse(key2), expires=rec.expires, body=json.dumps(body).encode()
    )
    first, second = api.submission_status(a, settings=ENC)
    assert (
        first.status == "undeliverable" and f"is for {B}, not for {A}" in first.reason
    )
    assert second.status == "undeliverable" and "names no researcher" in second.reason


def test_a_flooding_researcher_is_cut_off_at_its_quota_and_others_still_get_in(
    parties, app: Path, caplog: pytest.LogCaptureFixture
):
    a, b, owner = parties
    p = app / "toy_app" / "client_app.py"
    base = p.read_text()
    for i in range(5):  # five different projects from B
        p.write_text(base + f"\nVERSION = {i}\n")
        api.submit(app, [DO], client=b, settings=ENC)
    p.write_text(base)
    [sub_a] = api.submit(app, [DO], client=a, settings=ENC)
    with caplog.at_level(logging.WARNING, logger="syft_flwr.review"):
        new = api.receive_projects(owner, settings=ENC, max_pending=2)
    assert sorted(r.researcher for r in new) == [A, B, B]
    assert f"did not read 3 more submission(s) from {B}, who already has 2" in (
        caplog.text
    )
    assert "the limit per researcher is 2" in caplog.text
    store = api.project_store(owner)
    assert len(list((store.directory / "packages").iterdir())) == 3  # no more stored
    assert [s.status for s in api.submission_status(a, settings=ENC)] == ["pending"]
    assert any(r.project_hash == sub_a.project_hash for r in new)
    # Once the data owner decides one of B's, one more of B's is read.
    b_first = next(r for r in new if r.researcher == B)
    api.reject(owner, b_first.short, "one at a time", researcher=B, settings=ENC)
    more = api.receive_projects(owner, settings=ENC, max_pending=2)
    assert [r.researcher for r in more] == [B]


def test_a_resubmission_while_pending_is_answered_with_the_decision_too(
    parties, app: Path
):
    a, _, owner = parties
    api.submit(app, [DO], client=a, settings=ENC)
    api.submit(app, [DO], client=a, settings=ENC)  # the same files, sent again
    [rec] = api.receive_projects(owner, settings=ENC)
    assert len(rec.other_requests) == 1
    assert api.receive_projects(owner, settings=ENC) == []  # not read again
    api.reject(owner, rec.short, SECRET, settings=ENC)
    assert _status(a) == [("rejected", SECRET), ("rejected", SECRET)]
    assert api.receive_projects(owner, settings=ENC) == []
