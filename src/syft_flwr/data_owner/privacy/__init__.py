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

__all__ = [
    "ENV_PRIVACY_POLICY",
    "OUT_OF_BUDGET",
    "BudgetLedger",
    "PrivacyGuard",
    "PrivacyPolicy",
    "budget_folder",
]
