"""Epsilon reported after k charges equals dp-accounting's own computation."""

from __future__ import annotations

import pytest
from dp_accounting import dp_event, rdp

from syft_flwr.data_owner.privacy.accountant import epsilon_spent, event_key


@pytest.mark.parametrize(("sigma", "q", "k"), [(1.1, 1.0, 5), (0.9, 0.2, 30)])
def test_epsilon_after_k_rounds_equals_the_accountants(
    sigma: float, q: float, k: int
) -> None:
    acc = rdp.RdpAccountant()
    event: dp_event.DpEvent = dp_event.GaussianDpEvent(sigma)
    if q < 1:
        event = dp_event.PoissonSampledDpEvent(q, event)
    acc.compose(event, k)
    assert epsilon_spent({event_key(sigma, q): k}, 1e-5) == acc.get_epsilon(1e-5)


def test_mixed_policies_compose() -> None:
    acc = rdp.RdpAccountant()
    acc.compose(dp_event.GaussianDpEvent(1.0), 2)
    acc.compose(dp_event.GaussianDpEvent(2.0), 3)
    got = epsilon_spent({event_key(1.0, 1.0): 2, event_key(2.0, 1.0): 3}, 1e-6)
    assert got == acc.get_epsilon(1e-6)


def test_nothing_charged_is_zero() -> None:
    assert epsilon_spent({}, 1e-5) == 0.0
