"""The budget ledger: refuses exactly at the limit, survives, cannot be tampered
with or overspent by two processes at once."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest
from _privacy_support import policy

from syft_flwr.crypto.keys import generate_keys
from syft_flwr.crypto.state_mac import StateKey
from syft_flwr.data_owner.privacy.accountant import epsilon_spent, event_key
from syft_flwr.data_owner.privacy.budget import BudgetLedger
from syft_flwr.errors import PrivacyBudgetExceeded, StateIntegrityError

SIGMA = 1.0


def _limit_after(n: int, delta: float = 1e-5) -> float:
    """A budget between the epsilon of n and of n + 1 charges."""
    lo = epsilon_spent({event_key(SIGMA, 1.0): n}, delta)
    hi = epsilon_spent({event_key(SIGMA, 1.0): n + 1}, delta)
    return (lo + hi) / 2


def test_refuses_exactly_the_first_charge_past_the_budget(tmp_path: Path) -> None:
    key = StateKey(generate_keys(), "privacy-budget")
    p = policy(noise_multiplier=SIGMA, epsilon=_limit_after(4))
    ledger = BudgetLedger(tmp_path, key)
    spent = [ledger.charge(p, "proj", sampling_rate=1.0).total for _ in range(4)]
    assert spent == sorted(spent) and spent[-1] <= p.epsilon
    with pytest.raises(PrivacyBudgetExceeded) as err:
        ledger.charge(p, "proj", sampling_rate=1.0)
    msg = str(err.value)
    assert "out of privacy budget" in msg
    assert f"{spent[-1]:.4g} of {p.epsilon:g} is spent" in msg and "left" in msg
    # Refused means not written: a new ledger object (a restart) sees 4 charges.
    again = BudgetLedger(tmp_path, key).read(p.dataset)
    assert again.all_counts() == {event_key(SIGMA, 1.0): 4}


def test_per_project_cap_refuses_one_project_not_the_other(tmp_path: Path) -> None:
    p = policy(
        noise_multiplier=SIGMA, epsilon=100.0, per_project_epsilon=_limit_after(2)
    )
    ledger = BudgetLedger(tmp_path, None)
    ledger.charge(p, "a", sampling_rate=1.0)
    ledger.charge(p, "a", sampling_rate=1.0)
    with pytest.raises(
        PrivacyBudgetExceeded, match="project a is out of privacy budget.*cap"
    ):
        ledger.charge(p, "a", sampling_rate=1.0)
    c = ledger.charge(p, "b", sampling_rate=1.0)  # b has its own cap
    state = ledger.read(p.dataset)
    assert state.projects == {
        "a": {event_key(SIGMA, 1.0): 2},
        "b": {event_key(SIGMA, 1.0): 1},
    }
    assert c.total == pytest.approx(epsilon_spent({event_key(SIGMA, 1.0): 3}, 1e-5))


@pytest.mark.parametrize("how", ["edit", "other-key", "garbage"])
def test_tampered_budget_file_is_refused(tmp_path: Path, how: str) -> None:
    keys = generate_keys()
    p = policy()
    ledger = BudgetLedger(tmp_path, StateKey(keys, "privacy-budget"))
    ledger.charge(p, "proj", sampling_rate=1.0)
    f = ledger.path(p.dataset)
    if how == "edit":  # someone "refunds" the budget
        doc = json.loads(f.read_text())
        doc["body"]["projects"] = {}
        f.write_text(json.dumps(doc))
    elif how == "other-key":  # a budget file copied from another party
        ledger = BudgetLedger(tmp_path, StateKey(generate_keys(), "privacy-budget"))
    else:
        f.write_text("{not json")
    with pytest.raises(StateIntegrityError, match="privacy budget file") as err:
        ledger.charge(p, "proj", sampling_rate=1.0)
    assert "changed" in str(err.value) or "integrity" in str(err.value)


def _charge_until_refused(folder: str, raw_key: bytes, project: str, eps: float) -> int:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from syft_flwr.crypto.keys import PrivateKeys

    # The same data owner's identity key in both processes.
    keys = PrivateKeys(
        identity=Ed25519PrivateKey.from_private_bytes(raw_key),
        signed_prekey=X25519PrivateKey.generate(),
    )
    ledger = BudgetLedger(folder, StateKey(keys, "privacy-budget"))
    p = policy(noise_multiplier=SIGMA, epsilon=eps)
    n = 0
    while True:
        try:
            ledger.charge(p, project, sampling_rate=1.0)
        except PrivacyBudgetExceeded:
            return n
        n += 1


def test_two_processes_charging_at_once_cannot_overspend(tmp_path: Path) -> None:
    keys = generate_keys()
    raw = keys.identity.private_bytes_raw()
    eps = _limit_after(30)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        got = pool.starmap(
            _charge_until_refused,
            [(str(tmp_path), raw, "proj-a", eps), (str(tmp_path), raw, "proj-b", eps)],
        )
    # Exactly 30 charges fit, however the two interleaved; the file agrees.
    assert sum(got) == 30
    state = BudgetLedger(tmp_path, StateKey(keys, "privacy-budget")).read("default")
    assert sum(state.all_counts().values()) == 30
    assert state.spent(1e-5) <= eps


def test_budget_survives_a_prekey_rotation_and_a_restart(tmp_path: Path) -> None:
    # Rotation replaces the signed prekey; the identity key (the MAC key's root)
    # stays, so the budget is read, and kept spending, after it.
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from syft_flwr.crypto.keys import PrivateKeys

    keys = generate_keys()
    p = policy()
    BudgetLedger(tmp_path, StateKey(keys, "privacy-budget")).charge(
        p, "a", sampling_rate=1.0
    )
    rotated = PrivateKeys(
        identity=keys.identity,
        signed_prekey=X25519PrivateKey.generate(),
        prekey_version=keys.prekey_version + 1,
    )
    ledger = BudgetLedger(tmp_path, StateKey(rotated, "privacy-budget"))
    c = ledger.charge(p, "b", sampling_rate=1.0)
    assert c.total == epsilon_spent({event_key(1.0, 1.0): 2}, 1e-5)
