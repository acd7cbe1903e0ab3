"""``syft_flwr budget``: a data owner's privacy budget, per dataset and project."""

from __future__ import annotations

from pathlib import Path

from syft_flwr.cli._common import ConfigOpt, JsonOpt, PrivacyOpt, client_for, print_json

__all__ = ["budget", "privacy_status"]


def budget(
    config: ConfigOpt = None, json_: JsonOpt = False, privacy: PrivacyOpt = None
) -> None:
    """Data owner: privacy budget spent and left, per dataset and project."""
    from syft_flwr.data_owner.privacy.policy import PrivacyPolicy
    from syft_flwr.data_owner.privacy.report import budget_report, format_budget

    client = client_for(config)
    policy = PrivacyPolicy.from_env(path=privacy)
    rows = budget_report(_ledger(client), policy)
    if json_:
        print_json([r.as_dict() for r in rows])
    else:
        print(format_budget(rows), end="")


def privacy_status(client: object, privacy: Path | None) -> str:
    """The lines ``syft_flwr status`` adds: the policy in force and its budget."""
    from syft_flwr.data_owner.privacy.policy import PrivacyPolicy
    from syft_flwr.data_owner.privacy.report import budget_report, format_budget

    policy = PrivacyPolicy.from_env(path=privacy)
    if policy is None:
        return ""
    rows = [
        r for r in budget_report(_ledger(client), policy) if r.dataset == policy.dataset
    ]
    return f"privacy policy in force: {policy.describe()}\n" + format_budget(rows)


def _ledger(client: object):  # type: ignore[no-untyped-def]
    from syft_flwr.crypto.own_state import state_key_for
    from syft_flwr.data_owner.privacy import BudgetLedger, budget_folder

    state = client.state_dir("privacy")  # type: ignore[attr-defined]
    if state is None:
        from syft_flwr.errors import ConfigError

        raise ConfigError(f"{client} keeps no private state: no budget to show")
    return BudgetLedger(
        budget_folder(state),
        state_key_for(client, None, "privacy-budget"),  # type: ignore[arg-type]
    )
