"""The Gaussian mechanism: clipping, noise of the right size, refusals."""

from __future__ import annotations

import math

import numpy as np
import pytest
from _privacy_support import arrays_of, policy, reply, request
from flwr.app import ConfigRecord, RecordDict

from syft_flwr.data_owner.privacy.mechanism import privatize
from syft_flwr.errors import PrivacyPolicyViolation

W = {"w": np.zeros((50, 20), np.float32), "b": np.zeros(10, np.float64)}


def test_noise_std_matches_policy_on_zero_updates() -> None:
    # Many zero updates: every coordinate that leaves is pure noise.
    p = policy(clip_norm=0.5, noise_multiplier=1.3)
    rng = np.random.default_rng(1234)
    msg = request(W)
    samples = []
    for _ in range(40):
        out = privatize(p, msg, reply(msg, W), rng)
        a = arrays_of(_as_msg(msg, out.content))
        samples.append(np.concatenate([a["w"].ravel(), a["b"].ravel()]))
    noise = np.concatenate(samples)
    want = 1.3 * 0.5
    # 40 * 1010 draws: the sample std is within 1.5 % of the truth (>> 5 sigma).
    assert abs(noise.std() / want - 1) < 0.015
    assert abs(noise.mean()) < 0.01


def test_huge_update_is_clipped_to_clip_norm() -> None:
    # A malicious ClientApp returns huge arrays: what leaves is within clip_norm.
    p = policy(clip_norm=2.0, noise_multiplier=1.0)
    msg = request({"w": np.ones((3, 4), np.float32)})
    evil = {"w": np.full((3, 4), 1e30, np.float32)}
    out = privatize(p, msg, reply(msg, evil), np.random.default_rng(0))
    assert out.clipped and out.update_norm is not None and out.update_norm > 1e30
    # With the noise switched off (multiplier 0, here only) the update is exactly
    # the clipped one: norm == clip_norm, direction kept.
    quiet = privatize(_no_noise(p), msg, reply(msg, evil), np.random.default_rng(0))
    sent = arrays_of(_as_msg(msg, quiet.content))["w"].astype(np.float64) - 1.0
    assert np.linalg.norm(sent) == pytest.approx(2.0, rel=1e-5)
    assert np.allclose(sent, sent.flat[0])


def test_small_update_is_not_clipped() -> None:
    p = _no_noise(policy(clip_norm=10.0))
    msg = request({"w": np.zeros(4)})
    got = np.array([0.1, -0.2, 0.3, 0.0])
    out = privatize(p, msg, reply(msg, {"w": got}), np.random.default_rng(0))
    assert not out.clipped
    assert np.allclose(arrays_of(_as_msg(msg, out.content))["w"], got)


@pytest.mark.parametrize(
    ("arrays", "words"),
    [
        ({"w": np.zeros((50, 21), np.float32), "b": np.zeros(10)}, "shape"),
        ({"w": np.zeros((50, 20), np.float64), "b": np.zeros(10)}, "float64"),
        ({"w": np.zeros((50, 20), np.float32)}, "do not match"),
        ({**W, "extra": np.zeros(3)}, "do not match"),
        ({"w": np.zeros((50, 20), np.int32), "b": np.zeros(10)}, "not floating"),
    ],
)
def test_reply_arrays_that_do_not_match_are_refused(
    arrays: dict[str, np.ndarray], words: str
) -> None:
    msg = request(W)
    with pytest.raises(PrivacyPolicyViolation, match=words):
        privatize(policy(), msg, reply(msg, arrays), np.random.default_rng(0))


def test_other_record_name_is_refused() -> None:
    msg = request(W)
    with pytest.raises(PrivacyPolicyViolation, match="array records"):
        privatize(policy(), msg, reply(msg, W, record="x"), np.random.default_rng(0))


def test_metric_without_sensitivity_is_refused_never_sent() -> None:
    msg = request(W)
    r = reply(msg, W, metrics={"secret": 42.0})
    with pytest.raises(PrivacyPolicyViolation, match="'secret'"):
        privatize(policy(), msg, r, np.random.default_rng(0))


def test_config_records_are_refused() -> None:
    msg = request(W)
    r = reply(msg, W)
    r.content["leak"] = ConfigRecord({"row": "patient 17: positive"})
    with pytest.raises(PrivacyPolicyViolation, match="config records"):
        privatize(policy(), msg, r, np.random.default_rng(0))


def test_query_metrics_get_noise_per_declared_sensitivity() -> None:
    # Two metrics: joint sensitivity sqrt(2), so each gets std sigma*sqrt(2)*s.
    p = policy(noise_multiplier=0.8, sensitivities={"count": 1.0, "sum": 10.0})
    msg = request({}, message_type="query")
    rng = np.random.default_rng(7)
    counts, sums = [], []
    for _ in range(4000):
        out = privatize(p, msg, reply(msg, metrics={"count": 0, "sum": 0.0}), rng)
        rec = out.content.metric_records["metrics"]
        counts.append(rec["count"])
        sums.append(rec["sum"])
        assert isinstance(rec["count"], int) and isinstance(rec["sum"], float)
    k = math.sqrt(2)
    assert abs(np.std(sums) / (0.8 * k * 10.0) - 1) < 0.05
    # counts are rounded after noising (post-processing): std grows by < 1 %.
    assert abs(np.std(counts) / (0.8 * k * 1.0) - 1) < 0.06


def test_evaluate_replies_are_covered_too() -> None:
    msg = request(W, message_type="evaluate")
    r = reply(msg, metrics={"eval_acc": 0.9})
    with pytest.raises(PrivacyPolicyViolation, match="eval_acc"):
        privatize(policy(), msg, r, np.random.default_rng(0))
    p = policy(sensitivities={"eval_acc": 0.01})
    out = privatize(p, msg, r, np.random.default_rng(0))
    assert out.components == 1
    assert out.content.metric_records["metrics"]["eval_acc"] != 0.9


def test_unknown_message_type_is_refused() -> None:
    # Flower allows no other types than these legacy ones (see test_legacy.py).
    msg = request(W, message_type="get_properties")
    with pytest.raises(PrivacyPolicyViolation, match="Flower's legacy API"):
        privatize(policy(), msg, reply(msg, W), np.random.default_rng(0))


def test_sampling_sends_a_noised_zero_update_when_not_sampled() -> None:
    p = _no_noise(policy(clip_norm=1.0, sampling_rate=0.5))
    msg = request({"w": np.zeros(3)})
    r = {"w": np.array([0.5, 0.5, 0.5])}
    rng = np.random.default_rng(3)
    sent = [
        arrays_of(_as_msg(msg, privatize(p, msg, reply(msg, r), rng).content))["w"]
        for _ in range(400)
    ]
    zeros = sum(1 for s in sent if not s.any())
    assert 150 < zeros < 250  # about half, the others the real update
    assert all(not s.any() or np.allclose(s, 0.5) for s in sent)


def _no_noise(p):  # type: ignore[no-untyped-def]
    # The mechanism with noise multiplier 0 (a policy file refuses 0).
    object.__setattr__(p, "noise_multiplier", 0.0)
    return p


def _as_msg(msg, content):  # type: ignore[no-untyped-def]
    r = reply(msg)
    r.content = content
    return r


def test_train_without_arrays_charges_only_its_metrics() -> None:
    p = policy(sensitivities={"num-examples": 1.0})
    msg = request({})
    msg.content = RecordDict()  # no arrays at all in the request
    r = reply(msg, metrics={"num-examples": 10})
    assert privatize(p, msg, r, np.random.default_rng(0)).components == 1
    with pytest.raises(PrivacyPolicyViolation, match="do not match"):
        privatize(p, msg, reply(msg, {"w": np.ones(2)}), np.random.default_rng(0))


def test_histograms_as_metric_lists_and_integer_arrays_are_noised() -> None:
    p = policy(sensitivities={"hist.age": 1.0, "counts": 1.0})
    msg = request({}, message_type="query")
    r = reply(
        msg, arrays={"counts": np.array([5, 0, 7])}, metrics={"hist.age": [3, 5, 0]}
    )
    out = privatize(p, msg, r, np.random.default_rng(1))
    assert out.components == 2
    hist = out.content.metric_records["metrics"]["hist.age"]
    assert len(hist) == 3 and all(isinstance(v, int) for v in hist)
    counts = out.content.array_records["arrays"]["counts"].numpy()
    assert counts.dtype == np.array([1]).dtype and counts.shape == (3,)
    with pytest.raises(PrivacyPolicyViolation, match="not numbers"):
        bad = reply(msg, arrays={"counts": np.array([True, False])})
        privatize(p, msg, bad, np.random.default_rng(1))
