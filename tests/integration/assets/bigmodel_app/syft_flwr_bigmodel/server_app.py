"""ServerApp: send one big float32 vector to every data owner, check the replies.

Prints ``SYFT_FLWR_RESULT {json}`` with the checksums and the round-trip time and
writes the same JSON to ``$OUTPUT_DIR/bigmodel_result.json``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp

from syft_flwr_bigmodel import digest

app = ServerApp()


def make_model(num_floats: int, seed: int) -> np.ndarray:
    """The deterministic model the researcher sends."""
    return np.random.default_rng(seed).standard_normal(num_floats, dtype=np.float32)


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    model = make_model(int(cfg["num-floats"]), int(cfg["seed"]))
    sent = digest(model)
    expected_back = digest(model + np.float32(1.0))
    nodes = sorted(grid.get_node_ids())
    # One content for every node, as Flower's strategies do: syft_flwr stores
    # the model once in a folder only these data owners may read.
    content = RecordDict(
        {
            "model": ArrayRecord(array_dict={"w": Array(model)}),
            "config": ConfigRecord({"sha256": sent}),
        }
    )
    messages = [
        Message(content, dst_node_id=nid, message_type="train") for nid in nodes
    ]
    t0 = time.monotonic()
    replies = list(grid.send_and_receive(messages, timeout=float(cfg["round-timeout"])))
    seconds = time.monotonic() - t0
    per_node = []
    for reply in replies:
        if reply.has_error():
            per_node.append({"error": str(reply.error.reason)})
            continue
        back = reply.content["model"]["w"].numpy()
        info = reply.content["info"]
        per_node.append(
            {
                "node_id": reply.metadata.src_node_id,
                "received_sha256": str(info["received_sha256"]),
                "returned_sha256": digest(back),
                "returned_nbytes": int(back.nbytes),
            }
        )
    result = {
        "model_nbytes": int(model.nbytes),
        "sent_sha256": sent,
        "expected_returned_sha256": expected_back,
        "num_nodes": len(nodes),
        "num_replies": len(replies),
        "round_trip_s": seconds,
        "replies": per_node,
    }
    out = os.environ.get("OUTPUT_DIR")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "bigmodel_result.json").write_text(json.dumps(result, indent=2))
    print("SYFT_FLWR_RESULT " + json.dumps(result), flush=True)
