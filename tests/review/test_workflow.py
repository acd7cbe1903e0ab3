"""Submit, review, decide and serve: the whole review workflow over real transports."""

from __future__ import annotations

import shutil
import sys
import threading
from pathlib import Path

import pytest
from _support import make_syft_client
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.clientapp import ClientApp

from syft_flwr._flwr_compat import set_message_id
from syft_flwr.client.syft_p2p_client import MemoryClient
from syft_flwr.config import Settings
from syft_flwr.crypto.keys import generate_keys
from syft_flwr.crypto.policy import load_or_create_keys
from syft_flwr.crypto.state_mac import StateKey
from syft_flwr.data_owner.handler import ClientAppHandler
from syft_flwr.errors import ConfigError, ProjectNotApproved, RunFailed
from syft_flwr.researcher.runner import run_researcher
from syft_flwr.review import api, submissions
from syft_flwr.review.guard import PROJECT_RECORD, ProjectGuard, attach_project_hash
from syft_flwr.review.package import hash_tree, pack_app
from syft_flwr.review.store import ProjectStore, show_text
from syft_flwr.serde import bytes_to_flower_message, flower_message_to_bytes
from syft_flwr.transports.memory import MemoryHub

TOY = Path(__file__).resolve().parents[1] / "assets" / "toy_app"
DS, DO, OTHER = "ds@example.org", "do@example.org", "other@example.org"
ENC = Settings(encryption_enabled=True, poll_interval=0.25)


@pytest.fixture
def app(tmp_path: Path) -> Path:
    dst = tmp_path / "apps" / "toy_app"
    shutil.copytree(TOY, dst)
    return dst


@pytest.fixture
def parties(syft_root: Path):
    researcher = make_syft_client(syft_root, DS)
    owner = make_syft_client(syft_root, DO)
    load_or_create_keys(owner, owner.make_transport())  # publishes the owner's DID
    api.receive_projects(owner, settings=ENC)  # opens the review inbox
    return researcher, owner


def test_submit_review_reject_reaches_the_researcher(parties, app: Path):
    researcher, owner = parties
    [sub] = api.submit(app, [DO], client=researcher, settings=ENC)
    assert sub.project_hash == hash_tree(app)
    assert [s.status for s in api.submission_status(researcher, settings=ENC)] == [
        "pending"
    ]
    [rec] = api.receive_projects(owner, settings=ENC)
    assert (rec.researcher, rec.status) == (DS, "pending")
    assert rec.project_hash == sub.project_hash
    assert rec.fingerprint and [f[0] for f in rec.files][0] == "pyproject.toml"
    assert api.receive_projects(owner, settings=ENC) == []  # answered once
    text = show_text(api.project_store(owner), rec.project_hash[:8])
    assert "=== toy_app/client_app.py ===" in text and "def train" in text
    api.reject(owner, rec.project_hash[:8], "reads raw records", settings=ENC)
    [st] = api.submission_status(researcher, settings=ENC)
    assert (st.status, st.reason) == ("rejected", "reads raw records")


def test_approval_survives_a_restart_and_show_diffs_the_new_version(
    parties, app: Path, syft_root: Path
):
    researcher, owner = parties
    api.submit(app, [DO], client=researcher, settings=ENC)
    [first] = api.receive_projects(owner, settings=ENC)
    api.approve(owner, first.project_hash, settings=ENC)
    # A "restart": new client objects, new store, read from disk.
    owner2 = make_syft_client(syft_root, DO)
    assert api.project_store(owner2).is_approved(first.project_hash, DS)
    assert api.submission_status(researcher, settings=ENC)[0].status == "approved"
    # the same code submitted again is answered with the stored decision
    api.submit(app, [DO], client=researcher, settings=ENC)
    [again] = api.receive_projects(owner2, settings=ENC)
    assert again.status == "approved" and again.project_hash == first.project_hash
    statuses = [s.status for s in api.submission_status(researcher, settings=ENC)]
    assert statuses == ["approved", "approved"]
    # version 2 of the code: shown with a diff against the approved one
    p = app / "toy_app" / "client_app.py"
    p.write_text(p.read_text().replace("a + 1.0", "a + 2.0"))
    api.submit(app, [DO], client=researcher, settings=ENC)
    [second] = api.receive_projects(owner2, settings=ENC)
    assert second.status == "pending"
    text = show_text(api.project_store(owner2), second.project_hash)
    assert f"diff against approved {first.short}" in text
    assert '-                "arrays": ArrayRecord([a + 1.0' in text
    assert '+                "arrays": ArrayRecord([a + 2.0' in text


def test_project_signed_by_another_key_is_refused_and_the_researcher_told(
    parties, app: Path, monkeypatch: pytest.MonkeyPatch
):
    researcher, owner = parties
    other = Ed25519PrivateKey.generate()  # not the key DS published and DO pins
    real_pack = api.pack_app
    monkeypatch.setattr(  # where submit() finds it
        submissions,
        "pack_app",
        lambda d, who, _key, **kw: real_pack(d, who, other, **kw),
    )
    api.submit(app, [DO], client=researcher, settings=ENC)
    assert api.receive_projects(owner, settings=ENC) == []
    assert api.project_store(owner).records() == []  # nothing stored
    [st] = api.submission_status(researcher, settings=ENC)
    assert st.status == "refused" and "not signed" in st.reason


def _request(
    h: ClientAppHandler, named: str | None, sender: str | None = DS
) -> Message:
    """One request through ``h``, served for ``sender`` (as the events loop does)."""
    from syft_flwr._flwr_compat import set_task_identity
    from syft_flwr.data_owner.loop import RequestInfo, _current

    set_task_identity(3)
    msg = Message(
        RecordDict({"config": ConfigRecord({"x": 1})}),
        dst_node_id=h.node_id,
        message_type="train",
    )
    set_message_id(msg, "m-1")
    if named is not None:
        attach_project_hash(msg, named)
    info = None
    if sender is not None:
        info = RequestInfo("m-1", sender, "messages", "", "", {}, encrypted=True)
    token = _current.set(info)
    try:
        return bytes_to_flower_message(h(flower_message_to_bytes(msg)))
    finally:
        _current.reset(token)


def test_tampered_file_after_approval_is_refused_and_nothing_runs(tmp_path, app):
    store = ProjectStore(tmp_path / "store", key=StateKey(generate_keys(), "review"))
    data, manifest = pack_app(app, DS, Ed25519PrivateKey.generate())
    from syft_flwr.review.unpack import read_package

    store.add(
        read_package(data),
        researcher=DS,
        fingerprint="f",
        request_key="k",
        expires="e",
        data=data,
    )
    ran: list[Message] = []
    capp = ClientApp()

    @capp.train()
    def train(msg, context):
        ran.append(msg)
        return Message(RecordDict(), reply_to=msg)

    guard = ProjectGuard(store, manifest.project_hash, app)
    h = ClientAppHandler(capp, email=DO, check=guard)
    # pending: refused
    assert "not approved" in _request(h, manifest.project_hash).error.reason
    store.decide(manifest.project_hash, DS, "approved")
    assert not _request(h, manifest.project_hash).has_error()
    assert PROJECT_RECORD not in ran[0].content  # the ClientApp never sees it
    # other code, or no hash: refused
    assert "serves approved project" in _request(h, "0" * 64).error.reason
    assert "names no project hash" in _request(h, None).error.reason
    # a served file changed after approval: refused, nothing runs
    p = app / "toy_app" / "client_app.py"
    p.write_text(p.read_text() + "\nimport os\n")
    reply = _request(h, manifest.project_hash)
    assert "changed since approval" in reply.error.reason
    assert len(ran) == 1 and h.refused == 4 and guard.refused == 4


def test_data_owner_serves_only_the_approved_project(tmp_path: Path, app: Path):
    from syft_flwr.project import load_component, load_project

    hub = MemoryHub(max_file_size=4 * 1024 * 1024)
    settings = Settings(poll_interval=0.25)
    researcher = MemoryClient(DS, hub, state_dir=tmp_path / "ds")
    owner = MemoryClient(DO, hub, state_dir=tmp_path / "do")
    load_or_create_keys(owner, owner.make_transport())
    with pytest.raises(ConfigError, match="no review inbox"):
        api.submit(app, [DO], client=researcher, settings=settings)
    with pytest.raises(ProjectNotApproved, match="0 approved"):
        api.serve(owner, settings=settings)
    api.receive_projects(owner, settings=settings)
    [sub] = api.submit(app, [DO], client=researcher, settings=settings)
    api.receive_projects(owner, settings=settings)
    api.approve(owner, sub.project_hash, settings=settings)

    def serve_once() -> list:
        out: list = []
        th = threading.Thread(
            target=lambda: out.append(api.serve(owner, settings=settings)),
            daemon=True,
        )
        th.start()
        return [th, out]

    cfg = load_project(app)
    server_app = load_component(cfg.serverapp, cfg.app_dir)
    rc = dict(cfg.app_config, **{"num-server-rounds": 1, "min-nodes": 1})

    def research(project_hash: str) -> None:
        run_researcher(
            server_app,
            cfg.flwr_app_name,
            [DO],
            client=researcher,
            run_config=rc,
            settings=settings,
            stop_wait=5,
            project_hash=project_hash,
        )

    th, out = serve_once()
    research(sub.project_hash)
    th.join(timeout=20)
    assert not th.is_alive() and out[0].succeeded >= 1 and out[0].refused == 0
    # The data owner's process never imported the project: only its worker
    # did (from the working folder, checked there); the module in this
    # process, if any, is the researcher's copy.
    mod = sys.modules.get("toy_app.client_app")
    assert mod is None or (tmp_path / "do").resolve() not in Path(mod.__file__).parents
    # The researcher changed the code but not the review: every request refused.
    th, out = serve_once()
    # the toy ServerApp fails on zero results (IndexError) before RunFailed
    with pytest.raises((RunFailed, IndexError)):
        research("f" * 64)
    th.join(timeout=20)
    assert not th.is_alive() and out[0].succeeded == 0 and out[0].refused >= 1


def test_a_decision_not_sealed_by_the_data_owner_is_not_believed(parties, app: Path):
    import json

    from syft_flwr.transports.base import RpcPath
    from syft_flwr.wire.mailbox import SyftFlwrRpc

    researcher, owner = parties
    [sub] = api.submit(app, [DO], client=researcher, settings=ENC)
    forger = SyftFlwrRpc(owner.make_transport(), api.REVIEW_APP, settings=ENC)
    key = forger.head_key(DO, api.REVIEW_ENDPOINT, DS, sub.request_id, "request")
    body = {"status": "approved", "reason": "", "project_hash": sub.project_hash}
    forger.send_response(  # plaintext: anyone with write access could have put it
        RpcPath.parse(key), body=json.dumps(body).encode(), expires="2099-01-01"
    )
    [st] = api.submission_status(researcher, settings=ENC)
    assert st.status == "undeliverable" and "not encrypted" in st.reason


def test_a_module_shadowed_by_a_package_is_refused_and_the_researcher_told(
    parties, app: Path, monkeypatch: pytest.MonkeyPatch, caplog
):
    """The reviewer would read client_app.py; Python would run client_app/."""
    import logging

    researcher, owner = parties
    shadow = app / "toy_app" / "client_app"
    from syft_flwr.review import package

    real = package.collect_files

    def with_shadow(app_dir, **kw):  # a forger skips the packer's own check
        files = {}
        root = Path(app_dir)
        for p in sorted(root.rglob("*.py")) + [root / "pyproject.toml"]:
            files[p.relative_to(root).as_posix()] = p.read_bytes()
        return files

    shadow.mkdir()
    (shadow / "__init__.py").write_text("from toy_app.evil import app\n")
    with pytest.raises(ConfigError, match="share one import name"):
        real(app)  # the honest packer refuses it
    monkeypatch.setattr(package, "collect_files", with_shadow)
    [sub] = api.submit(app, [DO], client=researcher, settings=ENC)
    with caplog.at_level(logging.WARNING, logger="syft_flwr.review"):
        assert api.receive_projects(owner, settings=ENC) == []
    assert f"refused a submission from {DS}" in caplog.text
    assert "share one import name" in caplog.text
    assert api.project_store(owner).records() == []  # nothing stored
    [st] = api.submission_status(researcher, settings=ENC)
    assert st.status == "refused" and "toy_app/client_app.py and the package" in (
        st.reason
    )


def _guarded(store: ProjectStore, project_hash: str, work: Path):
    ran: list[Message] = []
    capp = ClientApp()

    @capp.train()
    def train(msg, context):
        ran.append(msg)
        return Message(RecordDict(), reply_to=msg)

    h = ClientAppHandler(capp, email=DO, check=ProjectGuard(store, project_hash, work))
    return h, ran


def test_the_guard_approves_the_researcher_not_the_files(tmp_path: Path, app: Path):
    from syft_flwr.review.package import pack_app
    from syft_flwr.review.unpack import read_package

    store = ProjectStore(tmp_path / "s", key=StateKey(generate_keys(), "review"))
    for who in (DS, OTHER):
        data, manifest = pack_app(app, who, generate_keys().identity)
        store.add(
            read_package(data), researcher=who, fingerprint="f",
            request_key=f"k-{who}", expires="e", data=data,
        )  # fmt: skip
    store.decide(manifest.project_hash, DS, "approved")
    h, ran = _guarded(store, manifest.project_hash, app)
    reply = _request(h, manifest.project_hash, sender=OTHER)
    assert f"not approved for {OTHER}" in reply.error.reason and ran == []
    assert (
        "sender is not known" in _request(h, manifest.project_hash, None).error.reason
    )
    assert not _request(h, manifest.project_hash, sender=DS).has_error()
    assert len(ran) == 1 and h.refused == 2
