"""Every mistake on the command line is refused before any party starts.

Each case runs the real ``syft_flwr`` command and asserts exit 2, one line on
stderr that names the mistake and the fix, and that no work folder was made
(nothing started).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.test_cli import TOY, cli

CASES = [
    (["-n", "0"], "--num-data-owners 0: a run needs at least 1 data owner"),
    (["-n", "-3"], "--num-data-owners -3"),
    (["--timeout", "0"], "--timeout 0.0: give the seconds"),
    (["--run-config", "x="], "--run-config 'x=': use key=value"),
    (["--run-config", "x"], "--run-config 'x': use key=value"),
    (["--run-config", "=3"], "--run-config '=3': use key=value"),
    (["--run-config", 'x="abc'], "a quote is not closed"),
    (
        ["--run-config", "num-server-roundz=2"],
        "no config key 'num-server-roundz'; did you mean num-server-rounds?",
    ),
    (
        ["--run-config", "num-server-rounds=abc"],
        "num-server-rounds must be a whole number (the app's default is 2), not 'abc'",
    ),
    (
        ["--run-config", "num-server-rounds=2 slow-seconds=fast"],
        "slow-seconds must be a number (the app's default is 0.0), not 'fast'",
    ),
]


@pytest.fixture
def app(tmp_path: Path) -> Path:
    dst = tmp_path / "toy_app"
    shutil.copytree(TOY, dst, ignore=shutil.ignore_patterns("__pycache__", "main.py"))
    return dst


@pytest.mark.parametrize(("args", "needle"), CASES, ids=[" ".join(a) for a, _ in CASES])
def test_simulate_refuses_before_anything_starts(
    app: Path, tmp_path: Path, args: list[str], needle: str
):
    work = tmp_path / "work"
    r = cli("simulate", str(app), "--workdir", str(work), *args)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], r.stderr
    assert r.stdout == ""  # no "syft_flwr simulate: ..." banner: nothing started
    assert not work.exists()


def test_run_refuses_a_bad_run_config_before_asking_for_paths(
    app: Path, tmp_path: Path
):
    data = tmp_path / "d1"
    data.mkdir()
    r = cli("run", str(app), "--run-config", "num-server-roundz=2")
    # Refused before the prompt for mock dataset paths (stdin is empty here).
    assert r.returncode == 2 and "did you mean num-server-rounds?" in r.stderr
    assert "nothing was entered" not in r.stderr
    assert not (app / "simulation_logs").exists()
    r = cli("run", str(app), "-m", str(data), "--timeout", "-1")
    assert r.returncode == 2 and "--timeout -1.0" in r.stderr
    assert not (app / "simulation_logs").exists()


@pytest.mark.parametrize(
    ("owners", "needle"),
    [
        ("do1@example.org,do1@example.org", "do1@example.org is listed twice"),
        ("r@example.org", "r@example.org is both the aggregator and a data owner"),
    ],
)
def test_bootstrap_refuses_before_writing(app: Path, owners: str, needle: str):
    before = (app / "pyproject.toml").read_text()
    r = cli("bootstrap", str(app), "-a", "r@example.org", "-d", owners)
    assert r.returncode == 2 and needle in r.stderr, r.stderr
    assert (app / "pyproject.toml").read_text() == before
    assert not (app / "main.py").exists()


def test_bootstrap_over_main_py_names_the_flag(app: Path):
    (app / "main.py").write_text("# mine\n")
    r = cli("bootstrap", str(app), "-a", "r@example.org", "-d", "do1@example.org")
    assert r.returncode == 2
    assert "already exists; run the same command with --force" in r.stderr
    assert "force=True" not in r.stderr  # Python advice has no place on the CLI
    assert (app / "main.py").read_text() == "# mine\n"


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (
            ["keys"],
            {"SYFTBOX_CLIENT_CONFIG_PATH": "{tmp}/nope/config.json"},
            "no SyftBox config at {tmp}/nope/config.json (set by "
            "SYFTBOX_CLIENT_CONFIG_PATH); give your SyftBox config with --config PATH",
        ),
        (
            ["keys", "show", "--config", "{tmp}/gone.json"],
            {},
            "no SyftBox config at {tmp}/gone.json (the config path given)",
        ),
        (
            ["audit"],
            {"HOME": "{tmp}/home"},
            "no SyftBox config at {tmp}/home/.syftbox/config.json (the default "
            "location)",
        ),
    ],
)
def test_config_errors_name_the_path_the_user_set_and_a_cli_flag(
    tmp_path: Path, args: list[str], env: dict[str, str], needle: str
):
    full = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SYFT_FLWR_", "SYFTBOX_"))
    }
    full.update({k: v.format(tmp=tmp_path) for k, v in env.items()})
    r = subprocess.run(
        [sys.executable, "-m", "syft_flwr", *(a.format(tmp=tmp_path) for a in args)],
        capture_output=True,
        text=True,
        timeout=120,
        env=full,
    )
    assert r.returncode == 2, r.stderr
    assert needle.format(tmp=tmp_path) in r.stderr
    # Neither syft_core's "not found at 'None'" nor Python-only advice.
    assert "None" not in r.stderr and "transport=" not in r.stderr
    assert not list(tmp_path.rglob("*.json"))  # nothing was created


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["keys", "rotate", "--grace", "xx"], "--grace: invalid duration 'xx'"),
        (
            ["gdrive-login", "--client-secrets", "{tmp}/nope.json"],
            "--client-secrets {tmp}/nope.json: no such file",
        ),
        # Not a Flower app: said before asking for the aggregator's email.
        (["bootstrap", "{tmp}"], "no pyproject.toml in {tmp}: is it a Flower app?"),
    ],
)
def test_flags_are_named_in_their_errors(tmp_path: Path, args: list[str], needle: str):
    r = cli(*(a.format(tmp=tmp_path) for a in args))
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle.format(tmp=tmp_path) in lines[0], r.stderr
    assert "Enter the researcher's email" not in r.stderr
