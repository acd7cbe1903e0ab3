"""Flower's legacy ClientApps (client_fn + NumPyClient) under a privacy policy:
refused, with a reason that says why and what to use instead, and nothing of
the reply leaves or is charged. Replies are built by Flower's own legacy
conversion code, exactly as a NumPyClient's reply reaches the data owner."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _privacy_support import policy, reply, request
from flwr.app import Message, RecordDict
from flwr.common import Code, FitIns, FitRes, Status, ndarrays_to_parameters
from flwr.compat.common.recorddict_compat import (
    fitins_to_recorddict,
    fitres_to_recorddict,
)

from syft_flwr._flwr_compat import set_task_identity
from syft_flwr.crypto.keys import generate_keys
from syft_flwr.crypto.state_mac import StateKey
from syft_flwr.data_owner.privacy import BudgetLedger, PrivacyGuard
from syft_flwr.data_owner.privacy.accountant import event_key

ROOT = Path(__file__).resolve().parents[3]
USE = "must use Flower's Message API (@app.train(), @app.evaluate(), @app.query()"


def _guard(tmp_path: Path) -> PrivacyGuard:
    p = policy(sensitivities={"num_examples": 1.0, "train_loss": 0.1})
    ledger = BudgetLedger(tmp_path / "budget", StateKey(generate_keys(), "p"))
    return PrivacyGuard(p, ledger, rng=np.random.default_rng(0))


def _fit() -> tuple[Message, Message]:
    set_task_identity(3)
    w = [np.zeros((4, 2), np.float32)]
    ins = fitins_to_recorddict(FitIns(ndarrays_to_parameters(w), {}), True)
    msg = Message(ins, dst_node_id=7, message_type="train")
    # A NumPyClient's fit() reply, as Flower turns it into a Message.
    res = FitRes(
        Status(Code.OK, "secret: 41 rows with HIV"),
        ndarrays_to_parameters([w[0] + 5.0]),
        50,
        {"train_loss": 0.3},
    )
    return msg, Message(fitres_to_recorddict(res, True), reply_to=msg)


def test_a_legacy_fit_reply_is_refused_saying_why_and_nothing_is_charged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    guard = _guard(tmp_path)
    msg, reply = _fit()
    audit: dict[str, object] = {}
    with caplog.at_level(logging.WARNING, "syft_flwr.data_owner.privacy"):
        out = guard.apply(msg, reply, project="p1", audit=audit)
    assert out.has_error()
    reason = out.error.reason
    assert "Flower's legacy layout (records fitres.metrics" in reason
    assert USE in reason and "nothing was charged" in reason
    assert "secret" not in reason  # the free-text status never leaves
    assert not out.has_content()
    assert "nothing sent for train" in caplog.text and USE in caplog.text
    assert str(audit["outcome"]).startswith("refused: the privacy policy refused")
    assert guard.ledger.read("default").projects == {}


@pytest.mark.parametrize("kind", ["get_properties", "get_parameters"])
def test_legacy_message_types_are_refused_naming_the_legacy_api(
    tmp_path: Path, kind: str
) -> None:
    set_task_identity(3)
    msg = Message(RecordDict(), dst_node_id=7, message_type=kind)
    reply = Message(RecordDict(), reply_to=msg)
    out = _guard(tmp_path).apply(msg, reply, project=None)
    assert out.has_error()
    assert f"replies to {kind!r} messages come from Flower's legacy API" in (
        out.error.reason
    )
    assert USE in out.error.reason


def test_a_message_api_reply_is_not_taken_for_legacy(tmp_path: Path) -> None:
    msg = request({"w": np.zeros(3, np.float32)}, message_type="evaluate")
    guard = _guard(tmp_path)
    out = guard.apply(msg, reply(msg, metrics={"num_examples": 50}), project=None)
    assert not out.has_error()
    assert guard.ledger.read("default").projects == {
        "unnamed": {event_key(1.0, 1.0): 1}
    }


@pytest.mark.slow
def test_simulate_legacy_numpy_under_a_policy_says_why_it_is_refused(
    tmp_path: Path,
) -> None:
    pol = tmp_path / "privacy.toml"
    pol.write_text(
        "clip_norm = 1.0\nnoise_multiplier = 1.0\nepsilon = 50\ndelta = 1e-5\n"
    )
    work = tmp_path / "work"
    done = subprocess.run(
        [sys.executable, "-m", "syft_flwr.cli", "simulate"]
        + [str(ROOT / "examples" / "legacy_numpy"), "-n", "2", "--workdir", str(work)]
        + ["--run-config", "num-server-rounds=1", "--privacy", str(pol)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode != 0  # the run cannot go on without a site's properties
    researcher = (work / "logs" / "researcher@example.org.log").read_text()
    assert "come from Flower's legacy API" in researcher and USE in researcher
    for do in ("do1@example.org", "do2@example.org"):
        log = (work / "logs" / f"{do}.log").read_text()
        assert "charged to dataset" not in log
    out = subprocess.run(
        [sys.executable, "-m", "syft_flwr.cli", "budget", "--json", "--config"]
        + [str(work / "configs" / "do2@example.org.json")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "[]"  # nothing was charged
