"""Packing, signing and safe unpacking of project packages."""

from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from syft_flwr.errors import ConfigError, ProjectSignatureError, UnsafeArchiveError
from syft_flwr.review.package import (
    FILES_PREFIX,
    MANIFEST_NAME,
    SIGNATURE_NAME,
    hash_tree,
    pack_app,
)
from syft_flwr.review.unpack import read_package, write_tree

TOY = Path(__file__).resolve().parents[1] / "assets" / "toy_app"
WHO = "ds@example.org"


@pytest.fixture
def app(tmp_path: Path) -> Path:
    dst = tmp_path / "toy_app"
    shutil.copytree(TOY, dst)
    return dst


def test_pack_keeps_sources_and_leaves_out_data_envs_caches_and_logs(app: Path):
    for junk in (
        ".venv/lib/x.py",
        "__pycache__/m.py",
        "simulation_logs/a.txt",
        "data/train.csv",
        "data/x.py",
        ".env",
        "weights.npz",
    ):
        (app / junk).parent.mkdir(parents=True, exist_ok=True)
        (app / junk).write_text("junk")
    key = Ed25519PrivateKey.generate()
    data, manifest = pack_app(app, WHO, key)
    paths = [f.path for f in manifest.files]
    assert paths == [
        "pyproject.toml",
        "toy_app/__init__.py",
        "toy_app/client_app.py",
        "toy_app/server_app.py",
    ]
    pkg = read_package(data)
    pkg.verify(key.public_key())
    assert pkg.project_hash == manifest.project_hash == hash_tree(app)
    out = write_tree(pkg.files, app.parent / "unpacked")
    assert hash_tree(out) == manifest.project_hash


def test_any_changed_byte_changes_the_hash(app: Path):
    before = hash_tree(app)
    p = app / "toy_app" / "client_app.py"
    p.write_text(p.read_text() + "\n# changed\n")
    assert hash_tree(app) != before


def test_wrong_signer_is_refused(app: Path):
    data, _ = pack_app(app, WHO, Ed25519PrivateKey.generate())
    with pytest.raises(ProjectSignatureError, match="not signed"):
        read_package(data).verify(Ed25519PrivateKey.generate().public_key())


def test_size_limit_when_packing(app: Path):
    (app / "big.py").write_text("x" * 5000)
    with pytest.raises(ConfigError, match="more than"):
        pack_app(app, WHO, Ed25519PrivateKey.generate(), max_bytes=4000)


def test_symlinked_source_is_not_packed(app: Path, tmp_path: Path):
    (tmp_path / "secret.py").write_text("secret")
    (app / "link.py").symlink_to(tmp_path / "secret.py")
    with pytest.raises(ConfigError, match="link"):
        pack_app(app, WHO, Ed25519PrivateKey.generate())


def _tar(members: list[tarfile.TarInfo | tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for m in members:
            if isinstance(m, tarfile.TarInfo):
                tar.addfile(m)
            else:
                info = tarfile.TarInfo(m[0])
                info.size = len(m[1])
                tar.addfile(info, io.BytesIO(m[1]))
    return buf.getvalue()


def _special(name: str, kind: bytes, target: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


@pytest.mark.parametrize(
    ("member", "message"),
    [
        (("app/../../evil.py", b"x"), "unsafe path"),
        (("/etc/evil.py", b"x"), "unsafe path"),
        (("app/./a.py", b"x"), "unsafe path"),
        (_special("app/link.py", tarfile.SYMTYPE, "/etc/passwd"), "a symlink"),
        (_special("app/hard.py", tarfile.LNKTYPE, "app/a.py"), "a hard link"),
        (_special("app/dev", tarfile.CHRTYPE), "a device"),
        (_special("app/fifo", tarfile.FIFOTYPE), "a FIFO"),
    ],
    ids=["dotdot", "absolute", "dot", "symlink", "hardlink", "device", "fifo"],
)
def test_unsafe_members_are_refused(member, message):
    with pytest.raises(UnsafeArchiveError, match=message):
        read_package(_tar([member]))


def test_over_size_and_too_many_files_are_refused(app: Path):
    data, _ = pack_app(app, WHO, Ed25519PrivateKey.generate())
    with pytest.raises(UnsafeArchiveError, match="more than 100 bytes"):
        read_package(data, max_bytes=100)
    with pytest.raises(UnsafeArchiveError, match="more than 2 files"):
        read_package(data, max_files=2)
    many = _tar([(f"app/f{i}.py", b"") for i in range(20)])
    with pytest.raises(UnsafeArchiveError, match="more than 5 files"):
        read_package(many, max_files=5)


def test_files_must_match_the_signed_manifest(app: Path):
    key = Ed25519PrivateKey.generate()
    data, _ = pack_app(app, WHO, key)
    pkg = read_package(data)
    members = [(MANIFEST_NAME, pkg.manifest_bytes), (SIGNATURE_NAME, pkg.signature)]
    members += [(FILES_PREFIX + p, b) for p, b in pkg.files.items()]
    members[-1] = (members[-1][0], members[-1][1] + b"# slipped in\n")
    with pytest.raises(UnsafeArchiveError, match="do not match the signed manifest"):
        read_package(_tar(members))
    extra = members[:-1] + [(FILES_PREFIX + "extra.py", b"import os")]
    with pytest.raises(UnsafeArchiveError, match="do not match"):
        read_package(_tar(extra))


def test_garbage_and_unsigned_archives_are_refused():
    with pytest.raises(UnsafeArchiveError, match="not a project archive"):
        read_package(b"\x00garbage")
    with pytest.raises(UnsafeArchiveError, match="no signed manifest"):
        read_package(_tar([("app/a.py", b"")]))


def test_write_tree_refuses_a_non_empty_destination(tmp_path: Path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "old.py").write_text("")
    with pytest.raises(UnsafeArchiveError, match="not empty"):
        write_tree({"a.py": b""}, tmp_path / "d")


def test_control_characters_never_reach_the_terminal(tmp_path: Path, app: Path):
    from syft_flwr.crypto.keys import generate_keys
    from syft_flwr.crypto.state_mac import StateKey
    from syft_flwr.review.store import ProjectStore, show_text

    with pytest.raises(UnsafeArchiveError, match="unsafe path"):
        read_package(_tar([("app/a\x1b[2J.py", b"")]))
    (app / "toy_app" / "client_app.py").write_text("x = 1  # \x1b[2J\x1b[1A hidden\n")
    data, manifest = pack_app(app, WHO, Ed25519PrivateKey.generate(), name="n\x1b]0;")
    store = ProjectStore(tmp_path / "store", key=StateKey(generate_keys(), "review"))
    pkg = read_package(data)
    store.add(
        pkg, researcher=WHO, fingerprint="f", request_key="k", expires="e", data=data
    )
    text = show_text(store, manifest.project_hash)
    assert "\x1b" not in text and "\\x1b[2J" in text and "n\\x1b]0;" in text
