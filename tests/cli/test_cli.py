"""The syft_flwr command line, as a user runs it (subprocesses)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

TOY = Path(__file__).resolve().parents[1] / "assets" / "toy_app"


def cli(
    *args: str, cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SYFT_FLWR_", "SYFTBOX_"))
    }
    return subprocess.run(
        [sys.executable, "-m", "syft_flwr", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=env,
    )


def syftbox_config(tmp_path: Path, email: str) -> Path:
    """A SyftBox client config for ``email`` with its data dir in ``tmp_path``."""
    from syft_core import SyftClientConfig

    conf = tmp_path / f"{email.split('@')[0]}.json"
    SyftClientConfig(
        path=conf,
        data_dir=tmp_path / "SB",
        email=email,
        server_url="http://127.0.0.1:9",
    ).save()
    return conf


@pytest.fixture
def app(tmp_path: Path) -> Path:
    dst = tmp_path / "toy_app"
    shutil.copytree(TOY, dst, ignore=shutil.ignore_patterns("__pycache__", "main.py"))
    return dst


def test_version():
    r = cli("version")
    assert (
        r.returncode == 0
        and r.stdout.startswith("syft_flwr ")
        and "flwr 1.4" in r.stdout
    )


def test_bootstrap_writes_table_and_entry_point_and_keeps_comments(app: Path):
    r = cli(
        "bootstrap",
        str(app),
        "-a",
        "researcher@Example.ORG",
        "-d",
        "do1@example.org,do2@example.org",
    )
    assert r.returncode == 0, r.stderr
    text = (app / "pyproject.toml").read_text()
    assert text.startswith("# A tiny Flower app")
    assert 'aggregator = "researcher@example.org"' in text
    assert 'datasites = ["do1@example.org", "do2@example.org"]' in text
    assert 'transport = "syftbox"' in text
    assert (app / "main.py").read_text().count("syft_flwr.run import main") == 1
    again = ["bootstrap", str(app), "-a", "r2@example.org", "-d", "do9@example.org"]
    # main.py exists: refused like upstream (FileExistsError), nothing changed.
    r = cli(*again, "-t", "p2p")
    assert r.returncode == 2 and "main.py already exists" in r.stderr
    assert (app / "pyproject.toml").read_text() == text
    r = cli(*again, "-t", "p2p", "--force")
    assert r.returncode == 0, r.stderr
    text = (app / "pyproject.toml").read_text()
    assert text.count("[tool.syft_flwr]") == 1 and 'transport = "p2p"' in text
    assert "do1@example.org" not in text


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["simulate", "/nonexistent/app"], "app folder not found"),
        (
            ["bootstrap", "{app}", "-a", "not-an-email", "-d", "do1@example.org"],
            "not a valid email",
        ),
        (["run", "{app}"], "--mock-dataset-paths"),
        (
            ["run", "{app}", "-m", "/nonexistent/data"],
            "mock dataset path does not exist",
        ),
    ],
)
def test_clear_one_line_errors(app: Path, args: list[str], needle: str):
    r = cli(*[a.replace("{app}", str(app)) for a in args])
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.strip().splitlines() if ln]
    assert (
        len(lines) == 1
        and lines[0].startswith("syft_flwr: error:")
        and needle in lines[0]
    )


def test_unreadable_pyproject_and_missing_components(app: Path):
    (app / "pyproject.toml").write_text("[project\nname=")
    r = cli("simulate", str(app))
    assert r.returncode == 2 and "cannot read" in r.stderr
    (app / "pyproject.toml").write_text('[project]\nname = "x"\n')
    r = cli("simulate", str(app))
    assert r.returncode == 2 and "serverapp/clientapp" in r.stderr


def test_main_py_refuses_unknown_email_and_unbootstrapped_app(
    app: Path, tmp_path: Path
):
    conf = syftbox_config(tmp_path, "eve@example.org")
    r = cli("bootstrap", str(app), "-a", "r@example.org", "-d", "do1@example.org")
    assert r.returncode == 0
    env = dict(os.environ, SYFTBOX_CLIENT_CONFIG_PATH=str(conf))
    p = subprocess.run(
        [sys.executable, str(app / "main.py")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert (
        p.returncode == 2
        and "neither the aggregator" in p.stderr
        and "eve@example.org" in p.stderr
    )
    from syft_flwr.errors import ConfigError
    from syft_flwr.project import load_project
    from syft_flwr.run import pick_role

    cfg = load_project(TOY)  # not bootstrapped
    with pytest.raises(ConfigError, match="not bootstrapped"):
        pick_role(cfg, "r@example.org")
    cfg = load_project(app)
    # exact match, never substring: "do1@example.org" must not match "xdo1@example.org"
    with pytest.raises(ConfigError):
        pick_role(cfg, "xdo1@example.org")
    assert pick_role(cfg, "do1@EXAMPLE.org") == "data-owner"
    # the local part is exact: DO1@ is somebody else
    with pytest.raises(ConfigError):
        pick_role(cfg, "DO1@example.org")
    assert pick_role(cfg, "r@example.org") == "researcher"


@pytest.mark.slow
def test_simulate_runs_processes_shows_progress_and_summary(app: Path, tmp_path: Path):
    work = tmp_path / "work"
    r = cli(
        "simulate",
        str(app),
        "-n",
        "3",
        "--run-config",
        "num-server-rounds=2 min-nodes=3",
        "--workdir",
        str(work),
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert 'TOY_RESULT {"final_mean": 2.0}' in r.stdout
    assert "[ROUND 2/2]" in r.stdout  # live progress from the researcher
    assert "simulation succeeded" in r.stdout
    summary = json.loads((work / "summary.json").read_text())
    assert summary["ok"] and len(summary["parties"]) == 4
    assert {p["returncode"] for p in summary["parties"]} == {0}
    for email in ("do1@example.org", "do2@example.org", "do3@example.org"):
        assert (
            "the researcher ended the run"
            in (work / "logs" / f"{email}.log").read_text()
        )
    # everything exchanged was cleaned up; keys were created with encryption on
    leftovers = list((work / "SyftBox" / "datasites").rglob("*.request"))
    assert leftovers == []
    assert (
        work / "SyftBox" / "datasites" / "do1@example.org" / "public" / "did.json"
    ).is_file()


@pytest.mark.slow
def test_upstream_run_form_and_failing_clientapp(app: Path, tmp_path: Path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    work = tmp_path / "work"
    r = cli(
        "run",
        str(app),
        "-m",
        f"{a},{b}",
        "--run-config",
        "fail-partition=0 num-server-rounds=1 min-nodes=1",
        "--workdir",
        str(work),
    )
    # `run` keeps logs where upstream put them: APP_DIR/simulation_logs
    log_r = (app / "simulation_logs" / "researcher@example.org.log").read_text()
    log_do1 = (app / "simulation_logs" / "do1@example.org.log").read_text()
    # the failure reaches the researcher as an error reply that names it...
    assert "ValueError" in log_r
    # ...but the private value only stays in the data owner's own log
    assert "123.456" not in log_r and "123.456" in log_do1
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.slow
def test_ctrl_c_on_researcher_stops_every_data_owner(app: Path, tmp_path: Path):
    work = tmp_path / "work"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SYFT_FLWR_", "SYFTBOX_"))
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "syft_flwr",
            "simulate",
            str(app),
            "-n",
            "2",
            "--workdir",
            str(work),
            "--run-config",
            "num-server-rounds=100 slow-seconds=0.5",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )
    log = work / "logs" / "researcher@example.org.log"
    deadline = time.time() + 60
    while time.time() < deadline and not (
        log.exists() and "[ROUND 2/100]" in log.read_text()
    ):
        time.sleep(0.2)
    assert log.exists() and "[ROUND 2/100]" in log.read_text()
    t0 = time.time()
    os.kill(proc.pid, signal.SIGINT)
    out, _ = proc.communicate(timeout=90)
    assert time.time() - t0 < 60
    assert proc.returncode != 0  # an interrupted run is not a success
    summary = json.loads((work / "summary.json").read_text())
    roles = {p["email"]: p["returncode"] for p in summary["parties"]}
    # data owners left cleanly because they got the stop signal
    assert roles["do1@example.org"] == 0 and roles["do2@example.org"] == 0
    for email in ("do1@example.org", "do2@example.org"):
        assert (
            "Researcher interrupted the run"
            in (work / "logs" / f"{email}.log").read_text()
        )


def test_unwritable_workdir_is_one_line_not_a_traceback(app: Path, tmp_path: Path):
    ro = tmp_path / "ro"
    ro.mkdir()
    (ro / "file").write_text("x")
    # a work folder that cannot be created: its parent is a file
    r = cli("simulate", str(app), "--workdir", str(ro / "file" / "work"))
    assert r.returncode in (1, 2)
    lines = [ln for ln in r.stderr.strip().splitlines() if ln]
    assert len(lines) == 1 and lines[0].startswith("syft_flwr: error:"), r.stderr
    assert "Traceback" not in r.stderr


def test_every_option_of_every_command_explains_itself():
    """Introspect the typer app (not a snapshot): every parameter has help text."""
    import argparse

    import click

    from syft_flwr.cli import get_command
    from syft_flwr.run import build_main_parser

    def walk(command: click.Command, path: str) -> list[str]:
        missing = [] if (command.help or "").strip() else [f"{path} (command)"]
        for param in command.params:
            if not (getattr(param, "help", None) or "").strip():
                missing.append(f"{path} {'/'.join(param.opts)}")
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                missing += walk(sub, f"{path} {name}")
        return missing

    root = get_command()
    assert walk(root, "syft_flwr") == []
    # the walk reaches every command, hidden ones included
    assert {"simulate", "keys", "audit", "party", "serve"} <= set(root.commands)
    assert {"show", "trust", "rotate"} <= set(root.commands["keys"].commands)

    def walk_argparse(parser: argparse.ArgumentParser) -> list[str]:
        return [
            "/".join(a.option_strings) or a.dest
            for a in parser._actions
            if not isinstance(a, argparse._HelpAction)
            and not (a.help and a.help.strip())
        ]

    assert walk_argparse(build_main_parser()) == []


@pytest.mark.parametrize(
    "args",
    [["--help"], ["simulate", "--help"], ["keys", "show", "--help"], ["-h"]],
)
def test_help_piped_is_plain_and_hides_internal_commands(args: list[str]):
    r = cli(*args)
    assert r.returncode == 0, r.stderr
    assert "\x1b" not in r.stdout + r.stderr
    assert "Usage: syft_flwr" in r.stdout
    assert "party" not in r.stdout and "SUPPRESS" not in r.stdout
    if args[0] == "simulate":  # options and the argument are explained
        for needle in ("--workdir", "--history-out", "--plot-out", "The Flower app"):
            assert needle in r.stdout


def test_usage_errors_are_one_plain_line_exit_2(app: Path):
    for args in (["simulate", str(app), "--bogus"], ["reject", "abc123"], ["nope"]):
        r = cli(*args)
        assert r.returncode == 2, (args, r.stderr)
        lines = [ln for ln in r.stderr.strip().splitlines() if ln]
        assert len(lines) == 1 and lines[0].startswith("syft_flwr: error:"), r.stderr
        assert "\x1b" not in r.stderr and "Traceback" not in r.stderr
    r = cli()  # no command: the help, as a usage error
    assert r.returncode == 2 and "Commands" in r.stdout


def test_json_output_for_scripts(tmp_path: Path):
    r = cli("version", "--json")
    assert r.returncode == 0 and set(json.loads(r.stdout)) == {"syft_flwr", "flwr"}
    conf = syftbox_config(tmp_path, "do@example.org")
    r = cli("keys", "--config", str(conf), "--json")
    assert r.returncode == 0, r.stderr
    own = json.loads(r.stdout)
    assert own["email"] == "do@example.org" and own["role"] == "own"
    r = cli("keys", "--config", str(conf), "show", "--json")
    assert [k["email"] for k in json.loads(r.stdout)] == ["do@example.org"]
    r = cli("projects", "--config", str(conf), "--json")
    assert r.returncode == 0 and json.loads(r.stdout) == [], r.stderr
    r = cli("status", "--config", str(conf), "--json")
    assert r.returncode == 0 and json.loads(r.stdout) == [], r.stderr
    r = cli("audit", "--config", str(conf), "--json")
    assert r.returncode == 0 and json.loads(r.stdout) == [], r.stderr


@pytest.mark.slow
def test_simulate_writes_history_json_and_png(app: Path, tmp_path: Path):
    work = tmp_path / "work"
    hist, png = tmp_path / "out" / "history.json", tmp_path / "out" / "plot.png"
    r = cli(
        "simulate",
        str(app),
        "-n",
        "2",
        "--run-config",
        "num-server-rounds=3 min-nodes=2",
        "--workdir",
        str(work),
        "--history-out",
        str(hist),
        "--plot-out",
        str(png),
    )
    assert r.returncode == 0, r.stdout + r.stderr
    history = json.loads(hist.read_text())
    assert history["rounds"] == [1, 2, 3]
    # the toy app's data owners report their running mean when evaluated
    evaluate = history["evaluate_metrics_clientapp"]
    assert [evaluate[str(i)]["mean"] for i in (1, 2, 3)] == [1.0, 2.0, 3.0]
    data = png.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5000
    assert "\x1b" not in r.stdout + r.stderr  # piped: no escape codes anywhere
    for log in (work / "logs").glob("*.log"):
        assert "\x1b" not in log.read_text(), log.name


@pytest.mark.slow
def test_simulate_history_of_a_legacy_server_app(tmp_path: Path):
    """A legacy ``server_fn`` app (flwr.server.Server.fit) has a history too."""
    legacy = tmp_path / "legacy_numpy"
    shutil.copytree(
        TOY.parents[2] / "examples" / "legacy_numpy",
        legacy,
        ignore=shutil.ignore_patterns("__pycache__", "main.py"),
    )
    hist = tmp_path / "history.json"
    r = cli(
        "simulate",
        str(legacy),
        "-n",
        "2",
        "--run-config",
        "num-server-rounds=2",
        "--workdir",
        str(tmp_path / "work"),
        "--history-out",
        str(hist),
    )
    assert r.returncode == 0, r.stdout + r.stderr
    history = json.loads(hist.read_text())
    assert history["rounds"] == [1, 2]
    # the legacy History's losses become a "loss" metric; round 0 is the start
    server = history["evaluate_metrics_serverapp"]
    assert list(server) == ["0", "1", "2"] and server["2"]["loss"] < server["0"]["loss"]
    assert set(history["evaluate_metrics_clientapp"]) == {"1", "2"}
