"""Train examples/fedavg_tabular under a site-enforced DP policy; plot the
global accuracy against the epsilon each site has spent.

    python examples/site_dp/accuracy_vs_epsilon.py --rounds 8 --out dp.png

Every data owner applies ``privacy.toml`` to its own replies (clipped, noised,
charged to its budget); the researcher's code is fedavg_tabular unchanged.
Run it again with the same ``--workdir`` and the sites spend from what they
left, until they refuse.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
APP = HERE.parent / "fedavg_tabular"


def main(argv: list[str] | None = None) -> dict[str, object]:
    from syft_flwr.data_owner.privacy import PrivacyPolicy
    from syft_flwr.data_owner.privacy.accountant import epsilon_spent, event_key
    from syft_flwr.history import simulation_history
    from syft_flwr.simulation import simulate

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--policy", type=Path, default=HERE / "privacy.toml")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=Path("accuracy_vs_epsilon.png"))
    args = ap.parse_args(argv)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="site_dp_"))
    res = simulate(
        APP,
        2,
        run_config=f"num-server-rounds={args.rounds} local-epochs=1",
        workdir=work,
        privacy=args.policy,
        fresh=True,
        quiet=True,
    )
    history = simulation_history(res) or {}
    server = history.get("evaluate_metrics_serverapp", {})
    policy = PrivacyPolicy.load(args.policy)
    key = event_key(policy.noise_multiplier, policy.sampling_rate)
    rounds = sorted(int(r) for r in server)
    # Each round is two replies per site (train, then evaluate).
    points = [
        (epsilon_spent({key: 2 * r}, policy.delta), server[str(r)]["accuracy"])
        for r in rounds
    ]
    _plot(points, args.out, policy.describe())
    out = {"ok": res.ok, "workdir": str(work), "points": points}
    print(json.dumps(out))
    return out


def _plot(points: list[tuple[float, float]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([e for e, _ in points], [a for _, a in points], marker="o")
    ax.set_xlabel("epsilon spent by each site (delta as in the policy)")
    ax.set_ylabel("global accuracy (researcher's test set)")
    ax.set_title("fedavg_tabular under site-enforced DP", fontsize=10)
    fig.text(0.01, 0.01, title[:110], fontsize=6)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    main()
