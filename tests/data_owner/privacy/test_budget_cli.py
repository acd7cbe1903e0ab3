"""`syft_flwr budget` and `simulate --privacy` on the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from syft_flwr.cli import app
from syft_flwr.simulation import prepare_network

ROOT = Path(__file__).resolve().parents[3]


def test_budget_with_nothing_spent_and_with_a_policy(tmp_path: Path) -> None:
    [cfg] = prepare_network(tmp_path, ["do1@example.org"]).values()
    runner = CliRunner()
    got = runner.invoke(app, ["budget", "--config", str(cfg)])
    assert got.exit_code == 0, got.output
    assert "no privacy budget spent yet" in got.output
    policy = tmp_path / "p.toml"
    policy.write_text(
        'clip_norm = 1\nnoise_multiplier = 1\nepsilon = 3\ndelta = 1e-6\ndataset = "a"\n'
    )
    got = runner.invoke(
        app, ["budget", "--config", str(cfg), "--privacy", str(policy), "--json"]
    )
    assert got.exit_code == 0, got.output
    [row] = json.loads(got.output)
    assert row["dataset"] == "a" and row["spent"] == 0.0 and row["left"] == 3.0


@pytest.mark.parametrize("command", ["simulate", "run"])
def test_simulate_refuses_a_bad_policy_before_anything_starts(
    tmp_path: Path, command: str
) -> None:
    bad = tmp_path / "p.toml"
    bad.write_text("clip_norm = 1\nnoise = 1\n")
    work = tmp_path / "work"
    args = [command, str(ROOT / "examples" / "fedavg_tabular")]
    if command == "run":
        args += ["-m", f"{tmp_path},{tmp_path}"]
    got = subprocess.run(
        [sys.executable, "-m", "syft_flwr.cli", *args, "--workdir", str(work)]
        + ["--privacy", str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert got.returncode != 0
    text = got.stdout + got.stderr
    assert "unknown key(s) noise" in text and str(bad) in text
    assert not (work / "logs").exists()  # no party started
