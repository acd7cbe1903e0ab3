"""The Gaussian mechanism a data owner applies to a reply before it leaves.

One reply is one Gaussian event of multiplier ``sigma`` (the policy's
``noise_multiplier``) over its *components*, each scaled to sensitivity 1:

* a ``train`` reply's model update (reply arrays minus the arrays the request
  carried, over every array at once), clipped to L2 norm ``clip_norm`` and
  divided by it;
* each metric (and, in analytics replies, each array) divided by its declared
  L2 sensitivity.

``k`` components scaled so have joint L2 sensitivity at most ``sqrt(k)``, so
each gets noise of std ``sigma * sqrt(k)`` (in its own units: times
``clip_norm`` or its sensitivity). With a sampling rate ``q < 1`` the site's
real values are used with probability ``q``, else zeros are noised and sent in
their place (Poisson sampling, done where the researcher cannot see it).
Anything the policy cannot scale (a ConfigRecord, a metric with no declared
sensitivity, arrays that do not match the request) is refused: never sent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict

from syft_flwr.data_owner.privacy.legacy import legacy_refusal
from syft_flwr.data_owner.privacy.policy import PrivacyPolicy
from syft_flwr.errors import PrivacyPolicyViolation

__all__ = ["Noised", "privatize"]

#: Flower message types whose replies carry a model update.
UPDATE_TYPES = ("train",)
#: Flower message types whose replies are analytics (metrics, counts, arrays).
ANALYTICS_TYPES = ("evaluate", "query")


@dataclass(frozen=True)
class Noised:
    """The private content of a reply, and what it cost.

    ``components`` is 0 for a reply with nothing data-dependent in it (no charge).
    """

    content: RecordDict
    components: int
    update_norm: float | None
    clipped: bool


def privatize(
    policy: PrivacyPolicy, msg: Message, reply: Message, rng: np.random.Generator
) -> Noised:
    """The content of ``reply`` (to ``msg``) clipped and noised under ``policy``.

    Raises
    ------
    PrivacyPolicyViolation
        The reply carries something the policy cannot make private.
    """
    legacy = legacy_refusal(msg, reply)
    if legacy is not None:
        raise PrivacyPolicyViolation(legacy)
    kind = msg.metadata.message_type.split(".", 1)[0]
    if kind not in UPDATE_TYPES + ANALYTICS_TYPES:
        raise PrivacyPolicyViolation(
            f"replies to {msg.metadata.message_type!r} messages are not covered by "
            "the privacy policy (only train, evaluate and query)"
        )
    content = reply.content
    if content.config_records:
        names = ", ".join(sorted(content.config_records))
        raise PrivacyPolicyViolation(
            f"the reply carries free-form config records ({names}), which no noise "
            "can make private"
        )
    sampled = bool(rng.random() < policy.sampling_rate)
    update: np.ndarray | None
    if kind in UPDATE_TYPES and (msg.content.array_records or content.array_records):
        update, norm, clipped = _clipped_update(policy, msg.content, content, sampled)
        arrays: dict[str, dict[str, np.ndarray]] = {}
    else:
        update, norm, clipped = None, None, False
        arrays = _analytics_arrays(policy, content, sampled)
    metrics = _metrics(policy, content, sampled)
    k = (update is not None) + sum(map(len, arrays.values())) + len(metrics)
    if k == 0:
        return Noised(content, 0, None, False)
    std = policy.noise_multiplier * math.sqrt(k)  # per unit of sensitivity
    out = RecordDict()
    if update is not None and msg.content.array_records:
        _noise_update(out, msg.content, content, update, std * policy.clip_norm, rng)
    for rname, named in arrays.items():
        out[rname] = ArrayRecord(
            {
                n: Array(_noised(a, std * policy.sensitivities[n], rng))
                for n, a in named.items()
            }
        )
    _noise_metrics(out, content, metrics, std, policy, rng)
    return Noised(out, k, norm, clipped)


def _clipped_update(
    policy: PrivacyPolicy, request: RecordDict, content: RecordDict, sampled: bool
) -> tuple[np.ndarray, float, bool]:
    """The whole update as one flat float64 vector, clipped to ``clip_norm``."""
    got, sent = content.array_records, request.array_records
    if set(got) != set(sent):
        raise PrivacyPolicyViolation(
            f"the reply's array records {sorted(got)} do not match the request's "
            f"{sorted(sent)}: the update cannot be computed, so it is not sent"
        )
    parts = []
    for rname in sorted(sent):
        mine, theirs = got[rname], sent[rname]
        if set(mine) != set(theirs):
            raise PrivacyPolicyViolation(
                f"record {rname!r}: the reply's arrays {sorted(mine)} do not match "
                f"the request's {sorted(theirs)}"
            )
        for name in sorted(theirs):
            a, b = _float_array(rname, name, mine[name]), theirs[name].numpy()
            if a.shape != b.shape or a.dtype != b.dtype:
                raise PrivacyPolicyViolation(
                    f"array {rname}/{name}: the reply has {a.dtype} of shape {a.shape}, the "
                    f"request carried {b.dtype} of shape {b.shape}; the update cannot be "
                    "clipped, so it is not sent"
                )
            parts.append((a.astype(np.float64) - b.astype(np.float64)).ravel())
    flat = np.concatenate(parts) if parts else np.zeros(0)
    if not np.all(np.isfinite(flat)):
        raise PrivacyPolicyViolation("the update has NaN or infinite values")
    norm = float(np.linalg.norm(flat))
    clipped = norm > policy.clip_norm
    if clipped:
        flat = flat * (policy.clip_norm / norm)
    if not sampled:
        flat = np.zeros_like(flat)
    return flat, norm, clipped


def _float_array(rname: str, name: str, arr: Array) -> np.ndarray:
    a = arr.numpy()
    if not np.issubdtype(a.dtype, np.floating):
        raise PrivacyPolicyViolation(
            f"array {rname}/{name} is {a.dtype}, not floating point: it cannot be "
            "noised"
        )
    return a


def _noise_update(
    out: RecordDict,
    request: RecordDict,
    content: RecordDict,
    update: np.ndarray,
    std: float,
    rng: np.random.Generator,
) -> None:
    """Write ``received + update + noise`` back, array by array, in the same order."""
    noisy = update + rng.normal(0.0, std, size=update.shape) if std else update
    at = 0
    for rname in sorted(request.array_records):
        theirs = request.array_records[rname]
        built = {}
        for name in sorted(theirs):
            b = theirs[name].numpy()
            piece = noisy[at : at + b.size].reshape(b.shape)
            at += b.size
            built[name] = (b.astype(np.float64) + piece).astype(b.dtype)
        # The reply's own order of arrays (a model's layer order matters).
        order = list(content.array_records[rname])
        out[rname] = ArrayRecord({n: Array(built[n]) for n in order})


def _analytics_arrays(
    policy: PrivacyPolicy, content: RecordDict, sampled: bool
) -> dict[str, dict[str, np.ndarray]]:
    out: dict[str, dict[str, np.ndarray]] = {}
    for rname, rec in content.array_records.items():
        out[rname] = {}
        for name, arr in rec.items():
            _sensitivity(policy, name, "array")
            a = arr.numpy()  # counts may be integers: noised, then rounded
            if not (
                np.issubdtype(a.dtype, np.floating)
                or np.issubdtype(a.dtype, np.integer)
            ):
                raise PrivacyPolicyViolation(
                    f"array {rname}/{name} is {a.dtype}, not numbers: it cannot be "
                    "noised"
                )
            out[rname][name] = a if sampled else np.zeros_like(a)
    return out


def _metrics(
    policy: PrivacyPolicy, content: RecordDict, sampled: bool
) -> dict[tuple[str, str], Any]:
    out: dict[tuple[str, str], Any] = {}
    for rname, rec in content.metric_records.items():
        for name, value in rec.items():
            _sensitivity(policy, name, "metric")
            out[(rname, name)] = (
                value if sampled else (type(value)() if isinstance(value, list) else 0)
            )
    return out


def _sensitivity(policy: PrivacyPolicy, name: str, what: str) -> float:
    s = policy.sensitivities.get(name)
    if s is None:
        raise PrivacyPolicyViolation(
            f"the reply carries the {what} {name!r}, which has no declared "
            f"sensitivity in {policy.source} ([analytics.sensitivity]); it is not sent"
        )
    return s


def _noise_metrics(
    out: RecordDict,
    content: RecordDict,
    metrics: dict[tuple[str, str], Any],
    std: float,
    policy: PrivacyPolicy,
    rng: np.random.Generator,
) -> None:
    for rname, rec in content.metric_records.items():
        noised: dict[str, Any] = {}
        for name, original in rec.items():
            value = metrics[(rname, name)]
            if isinstance(original, list) and not value:
                value = [0] * len(original)
            arr = np.asarray(value, dtype=np.float64)
            got = _noised(arr, std * policy.sensitivities[name], rng)
            noised[name] = _like(original, got)
        out[rname] = MetricRecord(noised)


def _noised(a: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    base = a.astype(np.float64)
    if std:
        base = base + rng.normal(0.0, std, size=base.shape)
    if np.issubdtype(a.dtype, np.integer):
        return np.rint(base).astype(a.dtype)  # post-processing: still private
    return base.astype(a.dtype) if np.issubdtype(a.dtype, np.floating) else base


def _like(original: Any, value: np.ndarray) -> Any:
    """``value`` in the type Flower expects of ``original`` (ints stay ints)."""
    if isinstance(original, list):
        ints = bool(original) and all(isinstance(v, int) for v in original)
        return [int(round(v)) if ints else float(v) for v in value.tolist()]
    if isinstance(original, int):
        return int(round(float(value)))
    return float(value)
