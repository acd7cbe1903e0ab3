"""examples/site_dp: accuracy against epsilon, from a real simulated run."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from syft_flwr.client.syft_core_client import SyftCoreClient
from syft_flwr.data_owner.privacy import PrivacyPolicy, data_owner_budget

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "site_dp" / "accuracy_vs_epsilon.py"


def test_plots_accuracy_against_the_epsilon_the_sites_spent(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("site_dp_example", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = mod.main(
        [
            "--rounds",
            "3",
            "--workdir",
            str(tmp_path / "w"),
            "--out",
            str(tmp_path / "p.png"),
        ]
    )
    assert out["ok"] and (tmp_path / "p.png").stat().st_size > 0
    eps = [e for e, _ in out["points"]]
    assert len(eps) == 4 and eps[0] == 0.0 and eps == sorted(eps)
    # The last point is what each site's own budget file says it spent.
    client = SyftCoreClient.load(tmp_path / "w" / "configs" / "do1@example.org.json")
    policy = PrivacyPolicy.load(SCRIPT.parent / "privacy.toml")
    [row] = data_owner_budget(client, policy)
    assert row.replies == 6 and row.spent == eps[-1]
