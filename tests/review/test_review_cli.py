"""The review workflow as users run it: every command a separate OS process."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from syft_core import SyftClientConfig

TOY = Path(__file__).resolve().parents[1] / "assets" / "toy_app"
R, DO = "r@example.org", "do@example.org"


def _env() -> dict[str, str]:
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SYFT_FLWR_", "SYFTBOX_"))
    }


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "syft_flwr", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(),
    )


def _config(tmp: Path, email: str) -> str:
    path = tmp / f"{email}.json"
    SyftClientConfig(
        path=path, data_dir=tmp / "SB", email=email, server_url="http://127.0.0.1:9"
    ).save()
    return str(path)


def _serve(conf: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "syft_flwr", "serve", "--config", conf],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_env(),
    )


def _research(app: Path, conf: str) -> subprocess.CompletedProcess:
    return cli(
        "party", str(app), "--role", "researcher", "--config", conf,
        "--run-config", "num-server-rounds=1 min-nodes=1 round-timeout=20",
    )  # fmt: skip


def test_submit_approve_serve_only_the_approved_code(tmp_path: Path):
    app = tmp_path / "toy_app"
    shutil.copytree(TOY, app, ignore=shutil.ignore_patterns("__pycache__"))
    r_conf, do_conf = _config(tmp_path, R), _config(tmp_path, DO)
    assert cli("bootstrap", str(app), "-a", R, "-d", DO).returncode == 0
    r = cli("submit", str(app), "--to", DO, "--config", r_conf)
    assert r.returncode == 2 and "no review inbox" in r.stderr
    assert cli("projects", "--config", do_conf).returncode == 0  # opens the inbox
    r = cli("submit", str(app), "--to", DO, "--config", r_conf)
    assert r.returncode == 0, r.stderr
    project = re.search(r"project hash: ([0-9a-f]{64})", r.stdout).group(1)
    r = cli("projects", "--config", do_conf)
    assert f"{project[:12]}  [pending]  toy_app" in r.stdout and R in r.stdout
    assert "toy_app/client_app.py" in r.stdout
    r = cli("show", project[:8], "--config", do_conf)
    assert "=== toy_app/client_app.py ===" in r.stdout and "def train" in r.stdout
    assert (  # the file that runs, not only the reference
        "clientapp: toy_app.client_app:app -> toy_app/client_app.py "
        "(after toy_app/__init__.py)"
    ) in r.stdout
    r = cli("serve", "--config", do_conf)  # nothing approved: nothing runs
    assert r.returncode == 1 and "ProjectNotApproved" in r.stderr
    assert cli("approve", project[:8], "--config", do_conf).returncode == 0
    r = cli("status", "--config", r_conf)
    assert f"{DO}: toy_app {project[:12]} [approved]" in r.stdout

    server = _serve(do_conf)
    r = _research(app, r_conf)
    out, _ = server.communicate(timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert server.returncode == 0, out
    assert "refused" not in out

    # The researcher edits the code after approval: the data owner runs none of it.
    p = app / "toy_app" / "client_app.py"
    p.write_text(p.read_text().replace("a + 1.0", "a + 5.0"))
    server = _serve(do_conf)
    r = _research(app, r_conf)
    out, _ = server.communicate(timeout=60)
    assert r.returncode != 0
    assert "refused the request" in r.stdout + r.stderr
    assert "is for project" in out and "but this data owner serves" in out


def _forged_with_bytecode(app: Path, client, marker: Path) -> tuple[bytes, object]:
    """The researcher's real, signed package plus a hidden unchecked-hash .pyc."""
    import hashlib
    import io
    import py_compile
    import tarfile

    from syft_flwr.crypto.policy import load_or_create_keys
    from syft_flwr.review.package import (
        FILES_PREFIX,
        MANIFEST_NAME,
        SIGNATURE_NAME,
        FileEntry,
        Manifest,
        _signed_bytes,
        collect_files,
        project_hash_of,
    )

    src = app / "toy_app" / "client_app.py"
    evil = app.parent / "evil.py"
    evil.write_text(
        src.read_text() + f"\nimport pathlib\npathlib.Path({str(marker)!r})"
        ".write_text('hidden bytecode ran')\n"
    )
    pyc = app.parent / "evil.pyc"
    py_compile.compile(
        str(evil),
        cfile=str(pyc),
        invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
    )
    files = collect_files(app)
    files[f"toy_app/__pycache__/client_app.{sys.implementation.cache_tag}.pyc"] = (
        pyc.read_bytes()
    )
    entries = tuple(
        FileEntry(p, hashlib.sha256(files[p]).hexdigest(), len(files[p]))
        for p in sorted(files)
    )
    manifest = Manifest("toy_app", R, project_hash_of(entries), entries, 0.0)
    mbytes = manifest.to_bytes()
    keys = load_or_create_keys(client, client.make_transport())
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        members = [
            (MANIFEST_NAME, mbytes),
            (SIGNATURE_NAME, keys.identity.sign(_signed_bytes(mbytes))),
            *((FILES_PREFIX + p, files[p]) for p in sorted(files)),
        ]
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue(), manifest


def test_a_package_hiding_bytecode_is_refused_and_none_of_it_ever_runs(
    tmp_path: Path, monkeypatch
):
    from syft_flwr.client import SyftCoreClient
    from syft_flwr.review import api, submissions

    app = tmp_path / "toy_app"
    shutil.copytree(TOY, app, ignore=shutil.ignore_patterns("__pycache__"))
    marker = tmp_path / "marker"
    r_conf, do_conf = _config(tmp_path, R), _config(tmp_path, DO)
    assert cli("bootstrap", str(app), "-a", R, "-d", DO).returncode == 0
    assert cli("projects", "--config", do_conf).returncode == 0  # opens the inbox
    # The researcher (a real identity key, the real delivery) sends the package
    # with a compiled client_app that the reviewer would never see as text.
    researcher = SyftCoreClient.load(r_conf)
    forged = _forged_with_bytecode(app, researcher, marker)
    monkeypatch.setattr(submissions, "pack_app", lambda *a, **k: forged)
    [sub] = api.submit(app, [DO], client=researcher)
    r = cli("projects", "--config", do_conf)
    assert r.returncode == 0, r.stderr
    assert "no projects submitted to you yet" in r.stdout  # nothing stored
    assert f"refused a submission from {R}" in r.stderr
    assert "__pycache__" in r.stderr and "never packed" in r.stderr
    r = cli("status", "--config", r_conf)
    assert f"{sub.project_hash[:12]} [refused]" in r.stdout
    assert "__pycache__" in r.stdout
    r = cli("serve", "--config", do_conf)
    assert r.returncode == 1 and "ProjectNotApproved" in r.stderr
    assert not marker.exists()
    # The same project without the hidden file: approved, served, result back.
    r = cli("submit", str(app), "--to", DO, "--config", r_conf)
    assert r.returncode == 0, r.stderr
    project = re.search(r"project hash: ([0-9a-f]{64})", r.stdout).group(1)
    assert cli("projects", "--config", do_conf).returncode == 0
    r = cli("show", project[:8], "--config", do_conf)
    assert "client_app." + sys.implementation.cache_tag not in r.stdout
    assert cli("approve", project[:8], "--config", do_conf).returncode == 0
    server = _serve(do_conf)
    r = _research(app, r_conf)
    out, _ = server.communicate(timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert server.returncode == 0 and "refused" not in out, out
    assert not marker.exists()


def _party_do(app: Path, conf: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "syft_flwr", "party", str(app), "--role", "data-owner",
         "--config", conf, *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(),
    )  # fmt: skip


def test_a_local_folder_is_served_unreviewed_only_by_explicit_opt_down(tmp_path: Path):
    app = tmp_path / "toy_app"
    shutil.copytree(TOY, app, ignore=shutil.ignore_patterns("__pycache__"))
    # The contained worker writes only where the data owner allows it.
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    marker = allowed / "imported"
    client_py = app / "toy_app" / "client_app.py"
    client_py.write_text(
        client_py.read_text()
        + f"\nimport pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
    )
    # The researcher's app config tries to pick the data owner's partition (7)
    # and fails the ClientApp on exactly that partition.
    pyproject = app / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text().replace(
            "fail-partition = -1", "fail-partition = 7\npartition-id = 7"
        )
    )
    r_conf, do_conf = _config(tmp_path, R), _config(tmp_path, DO)
    assert cli("bootstrap", str(app), "-a", R, "-d", DO).returncode == 0
    # Without the opt-down: refused before the app is imported, in words.
    r = cli("party", str(app), "--role", "data-owner", "--config", do_conf)
    assert r.returncode == 2, r.stderr
    assert "without review" in r.stderr and "syft_flwr serve" in r.stderr
    r = subprocess.run(
        [sys.executable, str(app / "main.py"), "--role", "data-owner",
         "--config", do_conf],
        capture_output=True, text=True, timeout=120, env=_env(),
    )  # fmt: skip
    assert r.returncode == 2 and "--no-review" in r.stderr, r.stderr
    assert not marker.exists()
    assert "WITHOUT REVIEW" not in cli("status", "--config", do_conf).stdout
    # With it: logged, served, shown by status; the node config stays the data
    # owner's (partition 0), so the ClientApp does not fail and the result arrives.
    server = _party_do(app, do_conf, "--no-review", "--allow-write", str(allowed))
    r = _research(app, r_conf)
    out, _ = server.communicate(timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert server.returncode == 0, out
    assert "WITHOUT REVIEW (--no-review)" in out and str(app) in out
    assert marker.read_text() == "ran"
    r = cli("status", "--config", do_conf)
    assert "served WITHOUT REVIEW (--no-review): flwr/" in r.stdout
    assert str(app) in r.stdout
    assert "containment of the ClientApp" in r.stdout and ": full (since" in r.stdout


def test_same_files_from_two_researchers_are_decided_apart(tmp_path: Path):
    """B submits A's files first; the data owner approves A's submission by name."""
    b = "b@example.org"
    app = tmp_path / "toy_app"
    shutil.copytree(TOY, app, ignore=shutil.ignore_patterns("__pycache__"))
    r_conf, b_conf, do_conf = (_config(tmp_path, e) for e in (R, b, DO))
    assert cli("bootstrap", str(app), "-a", R, "-d", DO).returncode == 0
    assert cli("projects", "--config", do_conf).returncode == 0  # opens the inbox
    assert cli("submit", str(app), "--to", DO, "--config", b_conf).returncode == 0
    r = cli("submit", str(app), "--to", DO, "--config", r_conf)
    project = re.search(r"project hash: ([0-9a-f]{64})", r.stdout).group(1)
    r = cli("projects", "--config", do_conf, "--brief")
    assert r.stdout.count(f"{project[:12]}  [pending]") == 2
    listed = json.loads(cli("projects", "--json", "--config", do_conf).stdout)
    assert sorted(p["researcher"] for p in listed) == sorted([R, b])
    assert not {"request_key", "other_requests"} & set(listed[0])  # internals
    r = cli("approve", project[:8], "--config", do_conf)
    assert r.returncode != 0 and "submitted by 2 researchers" in r.stderr
    r = cli("approve", project[:8], "--researcher", R, "--config", do_conf)
    assert r.returncode == 0 and f"for {R} only" in r.stdout
    r = cli("reject", project[:8], "--researcher", b, "--reason", "who are you?",
            "--config", do_conf)  # fmt: skip
    assert r.returncode == 0
    assert "[approved]" in cli("status", "--config", r_conf).stdout
    r = cli("status", "--config", b_conf)
    assert "[rejected]  reason: who are you?" in r.stdout and "approved" not in r.stdout
    r = cli("show", project[:8], "--researcher", b, "--config", do_conf)
    assert f"from {b}" in r.stdout and "reason: who are you?" in r.stdout

    # Someone who can write the data owner's state folder approves B's record.
    index = tmp_path / "SB" / ".syft_flwr" / "state" / DO / "_review" / "projects.json"
    doc = json.loads(index.read_text())
    for entry in doc["records"]:
        if entry["researcher"] == b:
            entry.update(status="approved", reason="")
    index.write_text(json.dumps(doc))
    r = cli("projects", "--config", do_conf, "--brief")
    assert "1 record(s) in your review store failed their integrity check" in r.stdout
    assert (
        "failed its integrity check" in r.stderr and f"from:        {b}" not in r.stdout
    )
    # B runs the same code anyway: the data owner's serve refuses B, runs R's.
    server = _serve(do_conf)
    rb = _research(app, b_conf)
    r = _research(app, r_conf)
    out, _ = server.communicate(timeout=60)
    assert rb.returncode != 0  # refused: B's ServerApp got no result at all
    assert f"{b} is not an allowed sender" in out and f"for {b}" not in out
    assert f"is waiting for work from {R}\n" in out  # only R's approval counts
    assert r.returncode == 0, r.stdout + r.stderr  # R's real result arrives
    assert f"running train (round group '') for {R}" in out
    assert server.returncode == 0, out
