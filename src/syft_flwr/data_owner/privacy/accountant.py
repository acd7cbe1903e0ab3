"""Epsilon spent by a list of charges, with ``dp-accounting``'s RDP accountant.

Every reply that leaves under a policy is one Poisson-sampled Gaussian event
(noise multiplier ``sigma``, sampling rate ``q``; ``q = 1`` is a plain Gaussian
event). The events of a dataset are composed with
:class:`dp_accounting.rdp.RdpAccountant` and converted to epsilon at the
policy's delta. Charges are kept as counts per ``(sigma, q)``, so a policy that
changes between runs is still accounted exactly.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

__all__ = ["epsilon_spent", "event_key", "parse_event_key"]

# dp-accounting logs a warning per RDP order it cannot evaluate; the order is
# then left out of the minimum (a larger, still valid epsilon). Not news for a
# data owner's log.
logging.getLogger("absl").setLevel(logging.ERROR)


def event_key(noise_multiplier: float, sampling_rate: float) -> str:
    """The ledger's name of one kind of charge (exact floats, as text)."""
    return f"{float(noise_multiplier)!r}|{float(sampling_rate)!r}"


def parse_event_key(key: str) -> tuple[float, float]:
    """``(noise_multiplier, sampling_rate)`` of :func:`event_key`."""
    sigma, q = key.split("|")
    return float(sigma), float(q)


def epsilon_spent(counts: Mapping[str, int], delta: float) -> float:
    """Epsilon at ``delta`` after the charges ``counts`` (event key -> how many).

    Returns 0.0 for no charge at all.
    """
    from dp_accounting import dp_event, rdp

    acc = rdp.RdpAccountant()
    composed = False
    for key, n in sorted(counts.items()):
        if n <= 0:
            continue
        sigma, q = parse_event_key(key)
        event: dp_event.DpEvent = dp_event.GaussianDpEvent(sigma)
        if q < 1.0:
            event = dp_event.PoissonSampledDpEvent(q, event)
        acc.compose(event, n)
        composed = True
    return float(acc.get_epsilon(delta)) if composed else 0.0
