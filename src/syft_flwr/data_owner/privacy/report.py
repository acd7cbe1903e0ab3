"""What a data owner's budget files say: epsilon spent and left, per project.

Used by ``syft_flwr budget`` and ``syft_flwr status``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from syft_flwr.data_owner.privacy.budget import BudgetLedger
from syft_flwr.data_owner.privacy.policy import PrivacyPolicy

__all__ = ["DatasetBudget", "budget_report", "data_owner_budget", "format_budget"]


@dataclass(frozen=True)
class DatasetBudget:
    """One dataset's budget: spent, left, by project (epsilon at ``delta``)."""

    dataset: str
    epsilon: float | None
    delta: float | None
    spent: float | None
    left: float | None
    replies: int
    projects: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "epsilon": self.epsilon,
            "delta": self.delta,
            "spent": self.spent,
            "left": self.left,
            "replies": self.replies,
            "projects": dict(self.projects),
        }


def budget_report(
    ledger: BudgetLedger, policy: PrivacyPolicy | None = None
) -> list[DatasetBudget]:
    """Every dataset with a budget file (and ``policy``'s, even if nothing is spent).

    The budget and delta are ``policy``'s for its dataset, else those of the
    dataset's last charge.
    """
    names = set(ledger.datasets())
    if policy is not None:
        names.add(policy.dataset)
    out = []
    for name in sorted(names):
        state = ledger.read(name)
        eps, delta = state.epsilon, state.delta
        if policy is not None and policy.dataset == name:
            eps, delta = policy.epsilon, policy.delta
        if delta is None:
            out.append(DatasetBudget(name, eps, None, None, None, 0))
            continue
        spent = state.spent(delta)
        projects = {p: state.spent(delta, p) for p in sorted(state.projects)}
        replies = sum(state.all_counts().values())
        left = None if eps is None else max(0.0, eps - spent)
        out.append(DatasetBudget(name, eps, delta, spent, left, replies, projects))
    return out


def data_owner_budget(
    client: Any, policy: PrivacyPolicy | None = None
) -> list[DatasetBudget]:
    """:func:`budget_report` of the data owner ``client`` (its own budget files).

    Raises
    ------
    ConfigError
        The client keeps no private state (nowhere a budget could be).
    StateIntegrityError
        A budget file was changed outside syft_flwr.
    """
    from syft_flwr.crypto.own_state import state_key_for
    from syft_flwr.data_owner.privacy.guard import budget_folder
    from syft_flwr.errors import ConfigError

    state = client.state_dir("privacy")
    if state is None:
        raise ConfigError(f"{client} keeps no private state: no budget to show")
    key = state_key_for(client, None, "privacy-budget")
    return budget_report(BudgetLedger(budget_folder(state), key), policy)


def format_budget(rows: list[DatasetBudget]) -> str:
    """The text ``syft_flwr budget`` prints."""
    if not rows:
        return "no privacy budget spent yet (no policy given, no charge kept)\n"
    lines = []
    for r in rows:
        if r.spent is None:
            lines.append(f"dataset {r.dataset}: nothing spent yet\n")
            continue
        lines.append(
            f"dataset {r.dataset}: epsilon spent {r.spent:.4g} of {r.epsilon:g}, "
            f"{r.left:.4g} left (delta {r.delta:g}; {r.replies} replies)\n"
        )
        lines += [f"  project {p}: epsilon {e:.4g}\n" for p, e in r.projects.items()]
    return "".join(lines)
