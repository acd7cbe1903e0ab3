"""The privacy step of a data owner's runner: noise, charge, or refuse a reply.

:class:`PrivacyGuard` sits in the data owner's own process, after the ClientApp
returned and before the reply is serialized, kept or sent, so no code of the
researcher's can skip or undo it. In order: the reply is clipped and noised
(:mod:`.mechanism`), the charge is written durably to the budget ledger
(:mod:`.budget`), and only then is the noised reply handed back to be kept and
sent. A reply the policy cannot process, or one the budget cannot pay for,
becomes an error reply saying why; nothing of it leaves.
"""

from __future__ import annotations

import logging
import secrets
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Error, Message
from flwr.common.constant import ErrorCode

from syft_flwr.data_owner.privacy.budget import BudgetLedger, Charge
from syft_flwr.data_owner.privacy.mechanism import privatize
from syft_flwr.data_owner.privacy.policy import PrivacyPolicy
from syft_flwr.errors import (
    PrivacyBudgetExceeded,
    PrivacyPolicyViolation,
    StateIntegrityError,
)

__all__ = ["OUT_OF_BUDGET", "PrivacyGuard", "budget_folder"]

logger = logging.getLogger("syft_flwr.data_owner.privacy")

#: Words every out-of-budget error reply carries (the researcher's log keys on them).
OUT_OF_BUDGET = "out of privacy budget"
#: Folder name next to the per-app state folders; no app name maps to it
#: (app names are made safe with '#' replaced).
_FOLDER = "#privacy-budget"


def budget_folder(state_dir: str | Path) -> Path:
    """Where a data owner's budget files live, given one app's state folder.

    Next to the per-app folders, so every app, project and fresh run of this
    data owner shares one budget.
    """
    return Path(state_dir).parent / _FOLDER


class PrivacyGuard:
    """Applies a :class:`PrivacyPolicy` to replies and charges its budget.

    Parameters
    ----------
    policy : PrivacyPolicy
        The data owner's policy.
    ledger : BudgetLedger
        The durable budget files.
    rng : numpy.random.Generator or None
        Source of the noise (default: seeded from :mod:`secrets`; tests fix it).
    default_project : str
        The project a request is charged to when it names no project hash
        (e.g. the app name of an unreviewed local run).
    """

    def __init__(
        self,
        policy: PrivacyPolicy,
        ledger: BudgetLedger,
        *,
        rng: np.random.Generator | None = None,
        default_project: str = "unnamed",
    ) -> None:
        self.policy = policy
        self.ledger = ledger
        self.rng = rng or np.random.default_rng(secrets.randbits(128))
        self.default_project = default_project

    def apply(
        self,
        msg: Message,
        reply: Message,
        *,
        project: str | None,
        audit: dict[str, Any] | None = None,
    ) -> Message:
        """``reply`` made private and paid for, or an error reply saying why not.

        Parameters
        ----------
        msg, reply : Message
            The request and the ClientApp's reply to it.
        project : str or None
            The approved project hash the request names (else the default).
        audit : dict or None
            The request's audit entry; the charge or refusal is added to it.
        """
        if reply.has_error():
            return reply  # only the error's type leaves (see docs/privacy.md)
        name = project or self.default_project
        try:
            noised = privatize(self.policy, msg, reply, self.rng)
        except PrivacyPolicyViolation as exc:
            return self._refused(
                msg, f"the privacy policy refused the reply: {exc}", audit
            )
        if noised.components == 0:
            return reply  # nothing data-dependent in it: free
        try:
            charge = self.ledger.charge(
                self.policy, name, sampling_rate=self.policy.sampling_rate
            )
        except PrivacyBudgetExceeded as exc:
            # Its text says "out of privacy budget", how much is spent and left.
            return self._refused(msg, str(exc), audit)
        except StateIntegrityError as exc:
            logger.error("%s", exc)
            return self._refused(
                msg, "the data owner's privacy budget could not be checked", audit
            )
        self._charged(msg, charge, noised.clipped, audit)
        reply.content = noised.content
        return reply

    def _charged(
        self, msg: Message, c: Charge, clipped: bool, audit: dict[str, Any] | None
    ) -> None:
        text = (
            f"charged to dataset {c.dataset!r}: epsilon spent {c.total:.4g} of "
            f"{self.policy.epsilon:g} ({max(0.0, c.left):.4g} left); project "
            f"{c.project}: {c.project_total:.4g}"
        )
        logger.info(
            "privacy: the %s reply was %snoised and %s",
            msg.metadata.message_type,
            "clipped and " if clipped else "",
            text,
        )
        if audit is not None:
            audit["privacy"] = text

    def _refused(
        self, msg: Message, reason: str, audit: dict[str, Any] | None
    ) -> Message:
        logger.warning(
            "privacy: nothing sent for %s: %s", msg.metadata.message_type, reason
        )
        if audit is not None:
            audit["privacy"] = f"refused: {reason}"
            audit["outcome"] = f"refused: {reason}"
        return Message(Error(ErrorCode.MOD_FAILED_PRECONDITION, reason), reply_to=msg)
