"""A data owner sends hostile values in a sealed, authentic reply: every party a
real OS process (``syft_flwr simulate``, encrypted by default).

``tests/assets/hostile_app``: three data owners; partitions 0 and 1 add 1.0 and
2.0 to the model, partition 2 (do3) answers NaN, Inf, a wrong shape or dtype, or
honest arrays with a NaN ``num-examples`` (FedAvg's weight). The
refusal is logged by the researcher, the run completes, and the global model is
FedAvg over the honest data owners: 1.5 per round, 3.0 after two rounds.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "tests" / "assets" / "hostile_app"
HOSTILE = "do3@example.org"  # partition-id 2
#: FedAvg of the honest data owners (+1, +2, equal weights) over two rounds.
HONEST_FEDAVG = 3.0

pytestmark = pytest.mark.slow


def _simulate(
    tmp_path: Path, run_config: str, **env: str
) -> tuple[subprocess.CompletedProcess[str], Path]:
    app = tmp_path / "hostile_app"
    if not app.exists():
        shutil.copytree(APP, app, ignore=shutil.ignore_patterns("__pycache__"))
    work = tmp_path / "work"
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SYFT_FLWR_", "SYFTBOX_"))
    }
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "syft_flwr",
            "simulate",
            str(app),
            "-n",
            "3",
            "--workdir",
            str(work),
            "--run-config",
            f"hostile-partition=2 {run_config}",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        env={**clean, **env},
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc, work


def _result(stdout: str) -> dict:
    lines = [ln for ln in stdout.splitlines() if "HOSTILE_RESULT " in ln]
    assert lines, stdout[-3000:]
    return json.loads(lines[-1].split("HOSTILE_RESULT ", 1)[1])


def _researcher_log(work: Path) -> str:
    return (work / "logs" / "researcher@example.org.log").read_text()


@pytest.mark.parametrize(
    ("kind", "why"),
    [
        ("nan", "array 'arrays'/'0' holds values that are not finite numbers"),
        ("inf", "array 'arrays'/'0' holds values that are not finite numbers"),
        (
            "shape",
            "array 'arrays'/'0' is float32 of shape (999,), the model sent was "
            "float32 of shape (1000,)",
        ),
        (
            "dtype",
            "array 'arrays'/'0' is float64 of shape (1000,), the model sent was "
            "float32 of shape (1000,)",
        ),
        # Honest arrays, NaN weight: FedAvg would make the whole model NaN.
        ("nan-weight", "metric 'metrics'/'num-examples' is not a finite number (nan)"),
    ],
)
def test_hostile_reply_is_refused_and_the_run_ends_with_the_honest_fedavg(
    tmp_path: Path, kind: str, why: str
) -> None:
    proc, work = _simulate(tmp_path, f'hostile-kind="{kind}"')
    # The refusal, in the researcher's log: who, which array, why (both rounds).
    log = _researcher_log(work)
    refusals = [ln for ln in log.splitlines() if "refused the reply of" in ln]
    assert len(refusals) == 2, log[-3000:]
    for line in refusals:
        assert f"refused the reply of {HOSTILE} to train request" in line
        assert why in line
        assert "the round goes on with the other data owners" in line
    # Flower counted it as that data owner's failure; the others were aggregated.
    assert log.count("Received 2 results and 1 failures") == 2
    assert "ClientApp calls: 12 sent, 10 succeeded, 2 failed" in log
    # The global model: finite, the model's shape and dtype, the honest FedAvg.
    final = _result(proc.stdout)
    assert final == {
        "shape": [1000],
        "dtype": "float32",
        "finite": True,
        "min": HONEST_FEDAVG,
        "max": HONEST_FEDAVG,
    }
    # The hostile data owner really answered (its ClientApp ran both rounds).
    assert (work / "logs" / f"{HOSTILE}.log").read_text().count("running train") == 2


def test_without_the_check_the_same_nan_poisons_the_global_model(
    tmp_path: Path,
) -> None:
    """The researcher's explicit opt-down: NaN accepted, said once in the log."""
    proc, work = _simulate(
        tmp_path, 'hostile-kind="nan"', SYFT_FLWR_ALLOW_NONFINITE="true"
    )
    log = _researcher_log(work)
    assert "refused the reply" not in log
    assert log.count("replies holding NaN or Inf are accepted") == 1
    final = _result(proc.stdout)
    assert final["finite"] is False and math.isnan(final["max"])


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        # FedAvg: (1e38 + x1 + x2) / 3 per round, finite but poisoned.
        ("fedavg", None),
        # FedMedian bounds it: median(+1, +2, 1e38) = +2 per round.
        ("median", 4.0),
    ],
)
def test_finite_values_within_range_are_accepted_robust_strategies_bound_them(
    tmp_path: Path, strategy: str, expected: float | None
) -> None:
    """1e38 fits float32: not refused (within-range poisoning, docs/security.md)."""
    proc, work = _simulate(tmp_path, f'hostile-kind="huge" strategy="{strategy}"')
    log = _researcher_log(work)
    assert "to train request" not in log  # no train reply refused
    final = _result(proc.stdout)
    assert final["finite"] is True
    if expected is None:
        assert final["min"] > 1e37  # the poisoned mean, still a finite model
        # Evaluating it, the data owners' float32 mean overflows: those honest
        # replies report an Inf metric and are refused, saying so.
        assert "metric 'metrics'/'mean' is not a finite number (inf)" in log
    else:
        assert final["min"] == final["max"] == expected
        assert "refused the reply" not in log
