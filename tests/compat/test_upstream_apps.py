"""Apps and main.py written exactly as upstream syft-flwr's bootstrap leaves them,
run over the local transport with every party a separate OS process."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from pathlib import Path

import pytest
from compat._upstream import (
    DATA_OWNERS,
    RESEARCHER,
    clean_env,
    copy_app,
    make_data,
    run_main_py,
    upstream_bootstrap,
)

import syft_flwr
from syft_flwr.simulation import prepare_network

pytestmark = pytest.mark.slow

VALUES = [[1.0, 2.0, 3.0], [10.0, 20.0]]
ESC = "\x1b["


@pytest.fixture
def app(tmp_path: Path) -> Path:
    d = copy_app(tmp_path / "upstream-analytics")
    upstream_bootstrap(d)
    return d


def _start_all(app: Path, tmp_path: Path, data: list[Path]) -> dict[str, tuple]:
    """Every party runs upstream's main.py as upstream's simulator starts it."""
    configs = prepare_network(tmp_path / "net", [RESEARCHER, *DATA_OWNERS])
    logs = tmp_path / "logs"
    logs.mkdir()
    procs = {}
    for email, ddir in zip(DATA_OWNERS, data, strict=True):
        procs[email] = (
            run_main_py(app, configs[email], logs / f"{email}.log", data_dir=ddir),
            logs / f"{email}.log",
        )
    procs[RESEARCHER] = (
        run_main_py(
            app,
            configs[RESEARCHER],
            logs / f"{RESEARCHER}.log",
            output_dir=tmp_path / "out",
        ),
        logs / f"{RESEARCHER}.log",
    )
    for proc, _ in procs.values():
        proc.wait(timeout=180)
    return procs


def test_upstream_main_py_runs_every_party_unchanged(app: Path, tmp_path: Path):
    data = make_data(tmp_path, VALUES)
    procs = _start_all(app, tmp_path, data)
    for email, (proc, log) in procs.items():
        text = log.read_text()
        assert proc.returncode == 0, f"{email}:\n{text}"
        assert "SYFT-FLWR main.py starting..." in text  # upstream's own template ran
        assert ESC not in text  # no colour codes in a log file
        assert "KeyError" not in text and "Traceback" not in text
    result = json.loads((tmp_path / "out" / "analytics.json").read_text())
    assert result == {"count": 5, "sum": 36.0, "replies": 2}
    # upstream's template picks the role from [tool.syft_flwr]
    assert "Running as FL SERVER" in procs[RESEARCHER][1].read_text()
    assert "Running as FL CLIENT" in procs[DATA_OWNERS[0]][1].read_text()


def test_every_clientapp_call_failing_fails_every_party(app: Path, tmp_path: Path):
    text = (app / "pyproject.toml").read_text()
    (app / "pyproject.toml").write_text(
        text.replace("fail-all = false", "fail-all = true")
    )
    data = make_data(tmp_path, VALUES)
    procs = _start_all(app, tmp_path, data)
    r_proc, r_log = procs[RESEARCHER]
    r_text = r_log.read_text()
    assert r_proc.returncode == 1, r_text
    assert "none of the 2 ClientApp calls succeeded" in r_text
    for email in DATA_OWNERS:
        proc, log = procs[email]
        d_text = log.read_text()
        assert proc.returncode == 1, d_text
        assert "all 1 ClientApp calls on" in d_text
        # the failure ran and was refused in the data owner's own words
        assert "RuntimeError" in d_text
    # both data owners answered, with error replies: nothing timed out
    assert "(2 failed, 0 unanswered)" in r_text
    out = json.loads((tmp_path / "out" / "analytics.json").read_text())
    assert out["replies"] == 0


def test_syft_flwr_run_keeps_upstream_return_and_log_place(app: Path, tmp_path: Path):
    data = make_data(tmp_path, VALUES)
    assert syft_flwr.run(app, [str(p) for p in data]) is True
    logs = app / "simulation_logs"
    names = sorted(p.name for p in logs.glob("*.log"))
    assert names == sorted(f"{e}.log" for e in [RESEARCHER, *DATA_OWNERS])
    r_log = (logs / f"{RESEARCHER}.log").read_text()
    assert "ANALYTICS count=5 sum=36.0" in r_log
    # upstream's template ignores its arguments: both data owners get
    # upstream's default node config, as they did upstream
    for email in DATA_OWNERS:
        assert "PARTITION 0/1" in (logs / f"{email}.log").read_text()
    assert ESC not in r_log


def test_syft_flwr_run_inside_a_running_loop_returns_a_task(app: Path, tmp_path: Path):
    data = make_data(tmp_path, VALUES)

    async def notebook_cell() -> tuple[bool, bool]:
        task = syft_flwr.run(app, data)
        is_task = isinstance(task, asyncio.Task)
        return is_task, await task

    is_task, ok = asyncio.run(notebook_cell())
    assert is_task and ok is True


def test_syft_flwr_run_reports_failure_as_false(app: Path, tmp_path: Path):
    text = (app / "pyproject.toml").read_text()
    (app / "pyproject.toml").write_text(
        text.replace("fail-all = false", "fail-all = true")
    )
    data = make_data(tmp_path, VALUES)
    assert syft_flwr.run(app, data) is False
    r_log = (app / "simulation_logs" / f"{RESEARCHER}.log").read_text()
    assert "the run failed" in r_log or "none of the 2 ClientApp calls" in r_log


def test_cli_run_on_upstream_app_uses_its_main_py(app: Path, tmp_path: Path):
    data = make_data(tmp_path, VALUES)
    r = subprocess.run(
        [
            *_cli(),
            "run",
            str(app),
            "-m",
            str(data[0]),
            "-m",
            str(data[1]),
            "--workdir",
            "relative-work",  # relative to cwd, as a user types it
        ],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
        env=clean_env(),
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "relative-work" / "summary.json").is_file()
    assert ESC not in r.stdout and ESC not in r.stderr
    r_log = (app / "simulation_logs" / f"{RESEARCHER}.log").read_text()
    assert "SYFT-FLWR main.py starting..." in r_log
    assert re.search(r"ANALYTICS count=5 sum=36\.0", r_log)


def _cli() -> list[str]:
    import sys

    return [sys.executable, "-m", "syft_flwr"]
