"""ServerApp: a FedAvg that decodes each reply's metadata, then a ``train.custom`` step."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import asdict

from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from custom_messages.metadata import KEY, RECORD, TrainProcessMetadata
from custom_messages.task import (
    SEED,
    accuracy,
    central_test_set,
    checksum,
    initial_params,
)

app = ServerApp()
log = logging.getLogger("custom_messages")

RESULT_PREFIX = "SYFT_FLWR_RESULT"


def decode_metadata(reply: Message) -> TrainProcessMetadata | None:
    """The reply's ``TrainProcessMetadata``, or None if it has none or it is invalid."""
    if not reply.has_content() or RECORD not in reply.content.config_records:
        return None
    raw = reply.content.config_records[RECORD].get(KEY)
    if not isinstance(raw, bytes):
        return None
    try:
        return TrainProcessMetadata.from_bytes(raw)
    except ValueError as exc:
        log.warning(
            "node %d sent invalid metadata: %s", reply.metadata.src_node_id, exc
        )
        return None


class CustomFedAvg(FedAvg):
    """FedAvg that also decodes the ``TrainProcessMetadata`` of every train reply."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        #: round -> node id -> metadata
        self.train_metadata: dict[int, dict[int, TrainProcessMetadata]] = {}

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        for reply in replies:
            meta = decode_metadata(reply)
            if meta is not None:
                self.train_metadata.setdefault(server_round, {})[
                    reply.metadata.src_node_id
                ] = meta
                log.info(
                    "round %d node %d: %s",
                    server_round,
                    reply.metadata.src_node_id,
                    asdict(meta),
                )
        return super().aggregate_train(server_round, replies)


@app.main()
def main(grid: Grid, context: Context) -> None:
    rc = context.run_config
    num_rounds = int(rc["num-server-rounds"])
    timeout = float(rc["round-timeout"])
    min_nodes = int(rc.get("min-nodes", 2))
    x_test, y_test = central_test_set(int(rc.get("seed", SEED)))
    hyper = {
        "learning-rate": float(rc["learning-rate"]),
        "batch-size": int(rc["batch-size"]),
    }

    strategy = CustomFedAvg(
        min_train_nodes=min_nodes,
        min_evaluate_nodes=min_nodes,
        min_available_nodes=min_nodes,
    )
    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(initial_params()),
        num_rounds=num_rounds,
        timeout=timeout,
        train_config=ConfigRecord({"local-epochs": int(rc["local-epochs"]), **hyper}),
    )

    # A custom message type: every data owner fine-tunes the final model locally.
    content = RecordDict(
        {
            "arrays": result.arrays,
            "config": ConfigRecord(
                {"finetune-epochs": int(rc["finetune-epochs"]), **hyper}
            ),
        }
    )
    messages = [
        Message(
            content=content, dst_node_id=nid, message_type=f"{MessageType.TRAIN}.custom"
        )
        for nid in grid.get_node_ids()
    ]
    personal: dict[int, float] = {}
    personal_meta: dict[int, TrainProcessMetadata] = {}
    for reply in grid.send_and_receive(messages, timeout=timeout):
        if reply.has_error():
            log.warning(
                "train.custom failed on node %d: %s",
                reply.metadata.src_node_id,
                reply.error.reason,
            )
            continue
        nid = reply.metadata.src_node_id
        personal[nid] = float(reply.content["metrics"]["personal_acc"])  # type: ignore[arg-type]
        meta = decode_metadata(reply)
        if meta is not None:
            personal_meta[nid] = meta

    params = result.arrays.to_numpy_ndarrays()
    all_meta = [
        m for per_round in strategy.train_metadata.values() for m in per_round.values()
    ]
    summary = {
        "example": "custom_messages",
        "rounds": num_rounds,
        "accuracy": round(accuracy(params, x_test, y_test), 4),
        "weights_sha256": checksum(params),
        "metadata_decoded": len(all_meta),
        "converged_replies": sum(m.converged for m in all_meta),
        "personalized_nodes": len(personal),
        "personal_acc_mean": round(sum(personal.values()) / max(1, len(personal)), 4),
    }
    context.state["final_model"] = result.arrays
    context.state["summary"] = ConfigRecord(dict(summary))
    # The decoded metadata, re-encoded per round and node, for whoever reads the state.
    context.state["train_metadata"] = ConfigRecord(
        {
            f"round_{r}.node_{nid}": meta.to_bytes()
            for r, per_round in strategy.train_metadata.items()
            for nid, meta in per_round.items()
        }
    )
    context.state["personalization"] = ConfigRecord(
        {f"node_{nid}": meta.to_bytes() for nid, meta in personal_meta.items()}
    )
    print(f"{RESULT_PREFIX} {json.dumps(summary, sort_keys=True)}", flush=True)
