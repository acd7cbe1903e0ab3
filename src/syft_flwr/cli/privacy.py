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
    from syft_flwr.data_owner.privacy.report import data_owner_budget, format_budget

    policy = PrivacyPolicy.from_env(path=privacy)
    rows = data_owner_budget(client_for(config), policy)
    if json_:
        print_json([r.as_dict() for r in rows])
    else:
        print(format_budget(rows), end="")


def privacy_status(client: object, privacy: Path | None) -> str:
    """The lines ``syft_flwr status`` adds: the policy in force and its budget."""
    from syft_flwr.data_owner.privacy.policy import PrivacyPolicy
    from syft_flwr.data_owner.privacy.report import data_owner_budget, format_budget

    policy = PrivacyPolicy.from_env(path=privacy)
    if policy is None:
        return ""
    rows = [r for r in data_owner_budget(client, policy) if r.dataset == policy.dataset]
    return f"privacy policy in force: {policy.describe()}\n" + format_budget(rows)
