"""Shared builders for the privacy tests (not a test module)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict

from syft_flwr._flwr_compat import set_task_identity
from syft_flwr.data_owner.privacy import PrivacyPolicy


def policy(**kw: Any) -> PrivacyPolicy:
    base: dict[str, Any] = dict(
        clip_norm=1.0, noise_multiplier=1.0, epsilon=10.0, delta=1e-5
    )
    base.update(kw)
    return PrivacyPolicy(**base)


def write_policy(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def request(
    arrays: dict[str, np.ndarray], message_type: str = "train", node: int = 7
) -> Message:
    set_task_identity(run_id=1)
    rd = RecordDict({"arrays": ArrayRecord({k: Array(v) for k, v in arrays.items()})})
    return Message(rd, dst_node_id=node, message_type=message_type)


def reply(
    msg: Message,
    arrays: dict[str, np.ndarray] | None = None,
    metrics: dict[str, Any] | None = None,
    record: str = "arrays",
) -> Message:
    rd = RecordDict()
    if arrays is not None:
        rd[record] = ArrayRecord({k: Array(v) for k, v in arrays.items()})
    if metrics is not None:
        rd["metrics"] = MetricRecord(metrics)
    return Message(rd, reply_to=msg)


def arrays_of(m: Message, record: str = "arrays") -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in m.content.array_records[record].items()}
