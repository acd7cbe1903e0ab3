"""A run without ``--workdir``: its temporary folder goes when it succeeded, stays
(with a note saying where) when it failed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.test_cli import TOY


def _simulate(app: Path, tmp: Path, run_config: str, *extra: str):
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SYFT_FLWR_", "SYFTBOX_"))
    }
    env["TMPDIR"] = str(tmp)  # where tempfile.mkdtemp puts the work folder
    return subprocess.run(
        [sys.executable, "-m", "syft_flwr", "simulate", str(app), *extra]
        + ["--run-config", run_config],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


@pytest.mark.slow
def test_temp_workdir_removed_on_success_kept_on_failure(tmp_path: Path):
    app = tmp_path / "toy_app"
    shutil.copytree(TOY, app, ignore=shutil.ignore_patterns("__pycache__"))
    tmp = tmp_path / "tmp"
    tmp.mkdir()

    ok = _simulate(app, tmp, "num-server-rounds=1")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "removed the temporary work folder" in ok.stdout
    assert list(tmp.glob("syft_flwr_sim_*")) == []

    # The only data owner's ClientApp raises: nothing succeeds, the run fails.
    bad = _simulate(
        app, tmp, "fail-partition=0 num-server-rounds=1 min-nodes=1", "-n", "1"
    )
    assert bad.returncode == 1, bad.stdout + bad.stderr
    kept = list(tmp.glob("syft_flwr_sim_*"))
    assert len(kept) == 1 and (kept[0] / "logs" / "do1@example.org.log").is_file()
    assert f"kept the temporary work folder {kept[0]}" in bad.stdout
