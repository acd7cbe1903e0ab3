"""End to end: `simulate --privacy` on examples/fedavg_tabular, twice in one
work dir; the second (--fresh) run spends from what the first left, and the
sites refuse once their budget is spent."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from syft_flwr.client.syft_core_client import SyftCoreClient
from syft_flwr.data_owner.privacy.accountant import epsilon_spent, event_key
from syft_flwr.events.audit import audit_entries

ROOT = Path(__file__).resolve().parents[3]
APP = ROOT / "examples" / "fedavg_tabular"
RC = "num-server-rounds=2 local-epochs=1 round-timeout=60"
KEY = event_key(1.0, 1.0)


def _budget(work: Path, email: str) -> list[dict[str, object]]:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "syft_flwr.cli",
            "budget",
            "--json",
            "--config",
            str(work / "configs" / f"{email}.json"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def _simulate(work: Path, policy: Path, *extra: str) -> str:
    """``syft_flwr simulate`` as a user runs it; the researcher's log."""
    cmd = [sys.executable, "-m", "syft_flwr.cli", "simulate", str(APP), "-n", "2"]
    cmd += ["--run-config", RC, "--workdir", str(work), "--privacy", str(policy)]
    done = subprocess.run(
        [*cmd, *extra], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return (work / "logs" / "researcher@example.org.log").read_text()


def test_budget_persists_across_fresh_simulations_and_sites_refuse(
    tmp_path: Path,
) -> None:
    # Room for exactly 6 replies per site: 2 rounds (train + evaluate each) in
    # the first run, then one round in the second; its second round is refused.
    limit = (epsilon_spent({KEY: 6}, 1e-5) + epsilon_spent({KEY: 7}, 1e-5)) / 2
    policy = tmp_path / "privacy.toml"
    policy.write_text(
        f"clip_norm = 1.0\nnoise_multiplier = 1.0\nepsilon = {limit!r}\n"
        "delta = 1e-5\n[analytics.sensitivity]\n"
        "num-examples = 1.0\ntrain_loss = 0.1\neval_loss = 0.1\neval_acc = 0.01\n"
    )
    work = tmp_path / "work"
    first = _simulate(work, policy)
    assert "out of privacy budget" not in first
    do1 = "do1@example.org"
    [row] = _budget(work, do1)
    assert row["replies"] == 4
    assert row["spent"] == epsilon_spent({KEY: 4}, 1e-5)

    second = _simulate(work, policy, "--fresh")
    assert "charged to dataset" in (work / "logs" / f"{do1}.log").read_text()
    [row] = _budget(work, do1)
    assert row["replies"] == 6  # never past the budget
    assert isinstance(row["spent"], float) and row["spent"] <= limit
    # One project: both runs serve the same app folder (the same project hash).
    [(project, spent)] = row["projects"].items()  # type: ignore[attr-defined]
    assert len(project) == 64 and spent == row["spent"]
    assert f"{do1} is out of privacy budget: dataset" in second
    # The end-of-run summary names each site that refused, with spent and left.
    for site in (do1, "do2@example.org"):
        line = f"site out of privacy budget: {site} (dataset 'default' is out of"
        assert second.count(line) == 1
    assert "ClientApp calls: 8 sent, 4 succeeded, 4 failed" in second
    assert "site out of privacy budget" not in first
    # Each charge and each refusal is in the data owner's audit trail.
    client = SyftCoreClient.load(work / "configs" / f"{do1}.json")
    notes = [str(e["privacy"]) for e in audit_entries(client) if "privacy" in e]
    assert sum(n.startswith("charged to dataset 'default'") for n in notes) == 6
    refused = [n for n in notes if n.startswith("refused: dataset 'default' is out")]
    assert len(refused) == 2  # round 2 of the second run: train, evaluate
