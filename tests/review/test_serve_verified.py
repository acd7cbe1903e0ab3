"""Attacks on what `serve` imports: hidden bytecode, planted files, extra modules.

Real folders, real Python bytecode (an "unchecked-hash" .pyc, which Python runs
without looking at the source next to it), a real ClientApp.
"""

from __future__ import annotations

import importlib
import logging
import py_compile
import shutil
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.clientapp import ClientApp

from syft_flwr._flwr_compat import set_message_id, set_task_identity
from syft_flwr.client.syft_p2p_client import MemoryClient
from syft_flwr.data_owner.handler import ClientAppHandler
from syft_flwr.errors import ProjectNotApproved
from syft_flwr.review import serve as serve_mod
from syft_flwr.review.guard import ProjectGuard, attach_project_hash
from syft_flwr.review.loader import VerifiedSourceFinder, load_verified
from syft_flwr.review.package import pack_app
from syft_flwr.review.store import project_store
from syft_flwr.review.unpack import read_package, write_tree
from syft_flwr.serde import bytes_to_flower_message, flower_message_to_bytes
from syft_flwr.transports.memory import MemoryHub

TOY = Path(__file__).resolve().parents[1] / "assets" / "toy_app"
DS, DO = "ds@example.org", "do@example.org"


def _plant_bytecode(work: Path, module_rel: str, marker: Path) -> Path:
    """Compile a hidden module that writes ``marker`` into ``__pycache__``.

    The .pyc is unchecked-hash: Python loads it for ``module_rel`` without
    comparing it with the (harmless) source beside it.
    """
    src = work / "evil_src.py"
    src.write_text(f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n")
    target = work / Path(module_rel).parent / "__pycache__"
    target.mkdir(parents=True, exist_ok=True)
    pyc = target / f"{Path(module_rel).stem}.{sys.implementation.cache_tag}.pyc"
    py_compile.compile(
        str(src),
        cfile=str(pyc),
        invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
    )
    src.unlink()
    return pyc


def _forget(top: str) -> None:
    for name in [n for n in sys.modules if n == top or n.startswith(top + ".")]:
        del sys.modules[name]


def test_planted_bytecode_runs_under_a_normal_import_but_never_through_the_finder(
    tmp_path: Path,
):
    files = {"hpkg/__init__.py": b"", "hpkg/mod.py": b"VALUE = 'reviewed source'\n"}
    marker = tmp_path / "marker"
    # the attack is real: Python's own import runs the planted bytecode
    plain = write_tree(files, tmp_path / "plain")
    _plant_bytecode(plain, "hpkg/mod.py", marker)
    sys.path.insert(0, str(plain))
    try:
        importlib.import_module("hpkg.mod")
    finally:
        sys.path.remove(str(plain))
        _forget("hpkg")
    assert marker.read_text() == "ran"
    marker.unlink()
    # the data owner's import compiles the verified bytes, ignoring the cache
    work = write_tree(files, tmp_path / "work")
    planted = _plant_bytecode(work, "hpkg/mod.py", marker)
    finder = VerifiedSourceFinder(work, files)
    finder.install()
    try:
        mod = importlib.import_module("hpkg.mod")
        assert mod.VALUE == "reviewed source"
        assert Path(mod.__file__) == (work / "hpkg" / "mod.py").resolve()
        # a module of the project's packages that is not a project file is not
        # looked for anywhere else (no .pyc, no native module)
        (work / "hpkg" / "extra.py").write_text("VALUE = 'not reviewed'\n")
        with pytest.raises(ModuleNotFoundError, match="in the approved project"):
            importlib.import_module("hpkg.extra")
    finally:
        finder.uninstall()
        _forget("hpkg")
    assert not marker.exists()
    # and it wrote no bytecode cache of its own
    assert list((work / "hpkg" / "__pycache__").iterdir()) == [planted]


@pytest.fixture
def approved(tmp_path: Path):
    """A data owner (memory transport, real folders) with the toy app approved."""
    app = tmp_path / "apps" / "toy_app"
    shutil.copytree(TOY, app, ignore=shutil.ignore_patterns("__pycache__"))
    owner = MemoryClient(DO, MemoryHub(), state_dir=tmp_path / "do")
    data, manifest = pack_app(app, DS, Ed25519PrivateKey.generate())
    store = project_store(owner)
    store.add(
        read_package(data),
        researcher=DS,
        fingerprint="f",
        request_key="k",
        expires="e",
        data=data,
    )
    rec = store.decide(manifest.project_hash, DS, "approved")
    return owner, store, manifest, rec


def test_a_file_planted_in_the_working_folder_is_refused_before_import(
    approved, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    owner, store, manifest, _ = approved
    marker = tmp_path / "marker"
    real_write = serve_mod.write_tree

    def write_and_plant(files, dest):  # someone writes into the folder meanwhile
        out = real_write(files, dest)
        _plant_bytecode(out, "toy_app/client_app.py", marker)
        return out

    monkeypatch.setattr(serve_mod, "write_tree", write_and_plant)
    _forget("toy_app")
    with pytest.raises(ProjectNotApproved) as err:
        serve_mod.serve(owner)
    msg = str(err.value)
    assert "an extra file toy_app/__pycache__/client_app." in msg
    assert "nothing of it was imported or run" in msg
    assert "toy_app.client_app" not in sys.modules and not marker.exists()


def _request(h: ClientAppHandler, named: str) -> Message:
    """One request through ``h`` from the approved researcher (as the loop serves it)."""
    from syft_flwr.data_owner.loop import RequestInfo, _current

    set_task_identity(3)
    msg = Message(
        RecordDict({"config": ConfigRecord({"x": 1})}),
        dst_node_id=h.node_id,
        message_type="train",
    )
    set_message_id(msg, "m-1")
    attach_project_hash(msg, named)
    token = _current.set(RequestInfo("m-1", DS, "messages", "", "", {}, encrypted=True))
    try:
        return bytes_to_flower_message(h(flower_message_to_bytes(msg)))
    finally:
        _current.reset(token)


def test_the_guard_hashes_every_file_of_the_working_folder(
    approved, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    _, store, manifest, rec = approved
    work = write_tree(store.package(rec).files, tmp_path / "w")
    ran: list[Message] = []
    capp = ClientApp()

    @capp.train()
    def train(msg, context):
        ran.append(msg)
        return Message(RecordDict(), reply_to=msg)

    guard = ProjectGuard(store, manifest.project_hash, work, files=manifest.files)
    h = ClientAppHandler(capp, email=DO, check=guard)
    assert not _request(h, manifest.project_hash).has_error() and len(ran) == 1
    # a file no packer would pack (and the old guard skipped) now refuses
    _plant_bytecode(work, "toy_app/client_app.py", tmp_path / "marker")
    with caplog.at_level(logging.WARNING, logger="syft_flwr.review"):
        reply = _request(h, manifest.project_hash)
    reason = reply.error.reason
    assert "an extra file toy_app/__pycache__/client_app." in reason
    assert "this request was not run" in reason and len(ran) == 1
    assert "an extra file toy_app/__pycache__" in caplog.text
    # the same check without the manifest still refuses (hash of every file)
    bare = ProjectGuard(store, manifest.project_hash, work)
    bare_reply = ClientAppHandler(capp, email=DO, check=bare)
    assert "hash to" in _request(bare_reply, manifest.project_hash).error.reason
    # and once the planted folder is gone, the approved code runs again
    shutil.rmtree(work / "toy_app" / "__pycache__")
    assert not _request(h, manifest.project_hash).has_error() and len(ran) == 2
    assert h.refused == 1


def test_an_entry_point_outside_the_project_is_refused_before_import(approved):
    _, store, _, rec = approved
    files = store.package(rec).files
    with pytest.raises(ProjectNotApproved, match="not a module of the approved"):
        load_verified(Path("/nonexistent"), files, "os:system")
