"""Site-enforced differential privacy: the data owner's policy and budget.

See ``docs/privacy.md``.
"""

from syft_flwr.data_owner.privacy.budget import BudgetLedger
from syft_flwr.data_owner.privacy.guard import (
    OUT_OF_BUDGET,
    PrivacyGuard,
    budget_folder,
)
from syft_flwr.data_owner.privacy.policy import ENV_PRIVACY_POLICY, PrivacyPolicy
from syft_flwr.data_owner.privacy.report import (
    DatasetBudget,
    data_owner_budget,
    format_budget,
)

__all__ = [
    "ENV_PRIVACY_POLICY",
    "OUT_OF_BUDGET",
    "BudgetLedger",
    "DatasetBudget",
    "PrivacyGuard",
    "PrivacyPolicy",
    "budget_folder",
    "data_owner_budget",
    "format_budget",
]
