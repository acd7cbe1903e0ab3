"""Progress reporting: live rich display on a terminal, plain log lines otherwise."""

from __future__ import annotations

import io
import logging
import os
import pty
import select
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from syft_flwr import progress

SCRIPT = textwrap.dedent(
    """
    import logging
    import time
    from syft_flwr import progress
    from syft_flwr.logs import setup_logging

    setup_logging()
    with progress.transfer("do1@example.org", "send", 3_000_000) as t:
        for i in range(12):
            t.advance(250_000)
            time.sleep(0.1)
            if i == 6:
                logging.getLogger("syft_flwr.test").info("MIDWAY NOTE")
    w = progress.wait("replies", 2, 30.0)
    w.update(answered=["do1@example.org"], waiting=["do2@example.org"])
    time.sleep(0.6)
    w.done()
    print("SCRIPT DONE", flush=True)
    """
)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "TERM")}
    return {**env, "TERM": "xterm-256color", "COLUMNS": "120", **extra}


def _run_on_pty(tmp_path: Path, **env: str) -> str:
    """Run SCRIPT with stdout and stderr on a pseudo-terminal; return all it drew."""
    script = tmp_path / "show.py"
    script.write_text(SCRIPT)
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=_env(**env),
        close_fds=True,
    )
    os.close(slave)
    out = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    proc.wait(timeout=30)
    os.close(master)
    assert proc.returncode == 0, out.decode(errors="replace")
    return out.decode(errors="replace")


def test_rich_display_on_a_terminal(tmp_path: Path) -> None:
    out = _run_on_pty(tmp_path)
    assert "\x1b[" in out  # a live display redraws with escape codes
    assert "→ do1@example.org" in out
    assert "MB/s" in out or "KB/s" in out  # the rate column
    assert "waiting for replies" in out and "before timeout" in out
    assert "SCRIPT DONE" in out
    # the live display replaced the plain lines
    assert "sending 3.0 MB to do1@example.org" not in out
    # a log line written meanwhile gets a line of its own, above the display
    (line,) = [ln for ln in out.split("\n") if "MIDWAY NOTE" in ln]
    assert "━" not in line.rstrip("\r").split("\r")[-1], repr(line)  # pty: \r\n


def test_no_color_on_a_terminal_gives_plain_lines(tmp_path: Path) -> None:
    out = _run_on_pty(tmp_path, NO_COLOR="1")
    assert "sending 3.0 MB to do1@example.org" in out
    assert "→ do1@example.org" not in out


def test_piped_output_is_plain_lines_without_escape_codes(tmp_path: Path) -> None:
    script = tmp_path / "show.py"
    script.write_text(SCRIPT)
    r = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(),
    )
    assert r.returncode == 0, r.stderr
    assert "\x1b" not in r.stdout + r.stderr
    lines = r.stderr.splitlines()
    assert sum("MIDWAY NOTE" in ln for ln in lines) == 1
    start = [ln for ln in lines if "sending 3.0 MB to do1@example.org" in ln]
    end = [ln for ln in lines if "sent 3.0 MB to do1@example.org in" in ln]
    assert len(start) == 1 and len(end) == 1 and "/s)" in end[0]
    waits = [ln for ln in lines if "1/2 replies" in ln]
    assert len(waits) == 1 and "waiting for do2@example.org" in waits[0]


def test_log_reporter_throttles_and_skips_small_transfers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reporter = progress.LogReporter(every=3600, min_bytes=1000)
    with caplog.at_level(logging.INFO, logger="syft_flwr.progress"):
        with reporter.transfer("do1@example.org", "receive", 999) as small:
            small.advance(999)
        assert caplog.records == []  # below min_bytes: nothing
        big = reporter.transfer("do2@example.org", "receive", 10_000)
        for _ in range(100):
            big.advance(100)  # throttled: no line per chunk
        big.done()
        big.done()  # a second done is ignored
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == "receiving 10.0 KB from do2@example.org"
    assert messages[1].startswith("received 10.0 KB from do2@example.org in ")
    assert len(messages) == 2


def test_failed_transfer_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    reporter = progress.LogReporter(min_bytes=0)
    with (
        caplog.at_level(logging.INFO, logger="syft_flwr.progress"),
        pytest.raises(RuntimeError),
        reporter.transfer("do1@example.org", "send", 2000) as t,
    ):
        t.advance(500)
        raise RuntimeError("sync refused it")
    last = caplog.records[-1]
    assert last.levelno == logging.WARNING
    assert "stopped after 500 B of 2.0 KB" in last.getMessage()


def test_default_reporter_follows_the_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(progress.default_reporter(io.StringIO()), progress.LogReporter)

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    assert isinstance(progress.default_reporter(Tty()), progress.RichReporter)
    monkeypatch.setenv("NO_COLOR", "1")
    assert isinstance(progress.default_reporter(Tty()), progress.LogReporter)


def test_set_and_use_reporter_and_direction_check() -> None:
    null = progress.NullReporter()
    previous = progress.set_reporter(null)
    try:
        assert progress.get_reporter() is null
        inner = progress.LogReporter()
        with progress.use_reporter(inner):
            assert progress.get_reporter() is inner
        assert progress.get_reporter() is null
        with pytest.raises(ValueError, match="direction"):
            progress.transfer("do1@example.org", "upload", 1)  # type: ignore[arg-type]
    finally:
        progress.set_reporter(previous)


def test_handles_are_thread_safe() -> None:
    handle = progress.NullReporter().transfer("do1@example.org", "send", 80_000)

    def push() -> None:
        for _ in range(1000):
            handle.advance(10)

    threads = [threading.Thread(target=push) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    handle.done()
    handle.advance(5)  # after done: ignored
    assert handle.completed == 80_000


def test_rich_reporter_draws_nothing_once_everything_is_done() -> None:
    from rich.console import Console

    buf = io.StringIO()
    reporter = progress.RichReporter(Console(file=buf, force_terminal=True))
    t = reporter.transfer("do1@example.org", "send", 1000)
    w = reporter.wait("replies", 3, 10)
    t.advance(1000)
    w.update(answered=["a@x.org"], waiting=["b@x.org", "c@x.org"])
    assert reporter._progress is not None
    t.done()
    w.done()
    assert reporter._progress is None  # the live display stopped with the last task
