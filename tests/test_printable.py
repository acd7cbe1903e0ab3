"""Untrusted text shown to a person is escaped: audit, projects, show, status, logs."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from syft_flwr._printable import printable
from syft_flwr.cli.review import format_projects, format_status
from syft_flwr.crypto.keys import generate_keys
from syft_flwr.crypto.state_mac import StateKey
from syft_flwr.data_owner.audit import format_audit
from syft_flwr.logs import FORMAT, PrintableFormatter
from syft_flwr.review.api import Submission
from syft_flwr.review.package import pack_app
from syft_flwr.review.store import ProjectRecord, ProjectStore, show_text
from syft_flwr.review.unpack import read_package

TOY = Path(__file__).resolve().parent / "assets" / "toy_app"
#: Erase the line, go to its start, and print a fake row; then a bidi override,
#: a C1 CSI (U+009B), an isolate, a zero-width space and a line separator.
HOSTILE = "evil\x1b[2K\r\x9b1A ok\u202etxt.py\u2066\u200b\u2028\x7f"
RAW = ("\x1b", "\r", "\x9b", "\u202e", "\u2066", "\u200b", "\u2028", "\x7f")


def _assert_escaped(text: str) -> None:
    for c in RAW:
        assert c not in text, f"{c!r} reached the terminal"
    for shown in ("\\x1b[2K", "\\r", "\\x9b1A", "\\u202e", "\\u2066", "\\u200b"):
        assert shown in text


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("\x1b[31m", "\\x1b[31m"),
        ("\x9b", "\\x9b"),
        ("\u202a\u202b\u202c\u202d\u202e", "\\u202a\\u202b\\u202c\\u202d\\u202e"),
        ("\u2066\u2067\u2068\u2069", "\\u2066\\u2067\\u2068\\u2069"),
        ("\u200e\ufeff", "\\u200e\\ufeff"),  # LRM, BOM: other format characters
        ("\U000e0041", "\\U000e0041"),  # a tag character (Cf, astral)
        ("a\nb\tc\r", "a\\nb\\tc\\r"),  # one field stays on one line
        ("caf\u00e9 \u4e2d \\x1b", "caf\u00e9 \u4e2d \\x1b"),  # text as it is
    ],
)
def test_every_control_and_format_character_is_shown_as_an_escape(raw, shown):
    assert printable(raw) == shown


def test_code_keeps_its_lines_but_nothing_else():
    assert printable("a\n\tb\x1b\r\n", multiline=True) == "a\n\tb\\x1b\\r\n"


def test_audit_table_escapes_researcher_fields():
    entries = [
        {"ts": 1.0, "event": "refused", "app": "a", "sender": "eve@x", "status": 403,
         "reason": "nope", "id": "1"},
        {"ts": 2.0, "event": "run", "app": HOSTILE, "sender": HOSTILE,
         "message_type": HOSTILE, "group": HOSTILE, "start": 1, "end": 2,
         "outcome": "ok"},
    ]  # fmt: skip
    table = format_audit(entries)
    _assert_escaped(table)
    assert len(table.splitlines()) == 3  # no field made a row of its own


def _record(**kw: object) -> ProjectRecord:
    base = dict(
        project_hash="ab" * 32, name=HOSTILE, researcher=HOSTILE, fingerprint="f",
        files=[[HOSTILE, "0" * 64, 3]], status="rejected", reason=HOSTILE,
        received=1.0, decided=2.0, request_key="k", expires="e",
    )  # fmt: skip
    base.update(kw)
    return ProjectRecord(**base)  # type: ignore[arg-type]


def test_projects_and_status_escape_names_reasons_and_file_names():
    text = format_projects([_record(note=HOSTILE)])
    _assert_escaped(text)
    sub = Submission(HOSTILE, "ab" * 32, HOSTILE, "r", "rejected", HOSTILE)
    _assert_escaped(format_status([sub]))


def test_show_escapes_reason_and_names_but_keeps_code_lines(tmp_path: Path):
    # Hostile characters in the code itself never get this far: the packer and the
    # receipt refuse them (tests/review/test_package.py); the decision's reason is
    # the data owner's own text and the names come from the researcher.
    app = tmp_path / "toy_app"
    shutil.copytree(TOY, app)
    src = app / "toy_app" / "client_app.py"
    src.write_text(src.read_text() + "\nx = 1\n")
    data, manifest = pack_app(app, "ds@example.org", Ed25519PrivateKey.generate())
    store = ProjectStore(tmp_path / "store", key=StateKey(generate_keys(), "review"))
    store.add(
        read_package(data),
        researcher="ds@example.org",
        fingerprint="f",
        request_key="k",
        expires="e",
        data=data,
    )
    store.decide(manifest.project_hash, "ds@example.org", "rejected", HOSTILE)
    text = show_text(store, manifest.project_hash[:8])
    _assert_escaped(text)
    assert "\nx = 1\n" in text.replace("\r\n", "\n")  # code is still readable


def test_log_lines_escape_messages_and_tracebacks():
    fmt = PrintableFormatter(FORMAT)
    rec = logging.LogRecord(
        "syft_flwr.events", logging.WARNING, __file__, 1,
        "refused request %s from %s", ("id\n12:00:00 INFO fake line", HOSTILE), None,
    )  # fmt: skip
    line = fmt.format(rec)
    _assert_escaped(line)
    assert "\n" not in line  # a newline in a value cannot start a fake log line
    try:
        raise ValueError(HOSTILE)
    except ValueError:
        import sys

        rec.exc_info = sys.exc_info()
        rec.exc_text = None
    text = fmt.format(rec)
    _assert_escaped(text)
    assert "Traceback" in text.splitlines()[1]  # the traceback keeps its lines


def test_a_hostile_group_id_and_file_name_come_out_escaped_from_syft_flwr_audit(
    make_client, events_runner, datasites_dir: Path, syft_root: Path
) -> None:
    """Through the real data owner loop, the real ClientApp handler and the CLI."""
    import os
    import subprocess
    import sys
    import time

    from _support import APP, PLAIN, wait_until
    from flwr.app import ConfigRecord, Message, RecordDict
    from flwr.clientapp import ClientApp

    from syft_flwr._flwr_compat import set_message_id, set_task_identity
    from syft_flwr.crypto.policy import load_or_create_keys
    from syft_flwr.data_owner.audit import audit_entries
    from syft_flwr.data_owner.handler import ClientAppHandler
    from syft_flwr.events import TransportEvents
    from syft_flwr.serde import flower_message_to_bytes
    from syft_flwr.wire.mailbox import PlaintextPolicy, SyftFlwrRpc

    ds_email, do_email, ep = "ds@example.org", "do1@example.org", "messages"
    do = make_client(do_email)
    load_or_create_keys(do, do.make_transport())  # the trail is MACed
    ds = SyftFlwrRpc(
        make_client(ds_email).make_transport(),
        APP,
        settings=PLAIN,
        policy=PlaintextPolicy(),
    )
    capp = ClientApp()

    @capp.train()
    def train(msg, context):
        return Message(RecordDict(), reply_to=msg)

    handler = ClientAppHandler(capp, email=do_email)
    ev = TransportEvents(APP, do, settings=PLAIN, poll_interval=0.25)
    ev.drain_timeout = 0.0
    ev.on_request(ep, handler)
    events_runner.start(ev)
    try:
        set_task_identity(3)
        msg = Message(
            RecordDict({"config": ConfigRecord({"x": 1})}),
            dst_node_id=handler.node_id,
            message_type="train",
            group_id=HOSTILE,
        )
        set_message_id(msg, "m-1")
        body = flower_message_to_bytes(msg)
        mid = ds.send_request(do_email, ep, body, expires_at=time.time() + 60)
        wait_until(lambda: ds.response_for(do_email, ep, mid), timeout=10)
        folder = datasites_dir / do_email / "app_data" / APP / "rpc" / ep / ds_email
        (folder / f"x{HOSTILE}.request").write_bytes(b"{}")
        wait_until(
            lambda: any(e["event"] == "refused" for e in audit_entries(do)),
            timeout=10,
            message="the bad file name in the trail",
        )
    finally:
        events_runner.stop(ev)
        ds.transport.close()
    assert handler.succeeded == 1
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SYFT_FLWR_", "SYFTBOX_"))
    }
    conf = syft_root / "configs" / f"{do_email}.json"
    r = subprocess.run(
        [sys.executable, "-m", "syft_flwr", "audit", "--config", str(conf)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    _assert_escaped(r.stdout)
    assert "train evil\\x1b[2K" in r.stdout  # the run row, its group id escaped
    assert "invalid name" in r.stdout  # the refused file, its name escaped
    assert "WARNING" not in r.stdout + r.stderr  # the trail itself verifies


def test_command_errors_are_escaped(capsys: pytest.CaptureFixture[str]) -> None:
    from syft_flwr.cli import run_cli

    assert run_cli(["audit", "--config", f"/nonexistent/{HOSTILE}.json"]) == 2
    err = capsys.readouterr().err
    assert not any(c in err for c in RAW)
    # whitespace (\r, U+2028) is folded into one line; the rest is escaped
    assert all(e in err for e in ("\\x1b[2K", "\\x9b1A", "\\u202e", "\\u2066"))
    assert err.count("\n") == 1  # one line, whatever the message quotes
