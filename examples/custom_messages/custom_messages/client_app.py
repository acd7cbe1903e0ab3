"""ClientApp: replies carry a ``TrainProcessMetadata``; ``train.custom`` personalizes.

Handlers are registered per message type, FederatedScope-style:
``@app.train()`` handles ``"train"``, ``@app.train("custom")`` handles
``"train.custom"``, ``@app.evaluate()`` handles ``"evaluate"``.
"""

from __future__ import annotations

import time

from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp

from custom_messages.metadata import KEY, RECORD, TrainProcessMetadata
from custom_messages.task import (
    SEED,
    Partition,
    accuracy,
    batch_rng,
    load_local_data,
    log_loss,
    train,
)

app = ClientApp()

#: Batch-order stream used by the personalization step (apart from the rounds').
FINETUNE_STREAM = 10_000


def _setup(context: Context) -> tuple[Partition, int, int]:
    seed = int(context.run_config.get("seed", SEED))
    pid = int(context.node_config.get("partition-id", 0))
    return load_local_data(dict(context.node_config), seed), pid, seed


def _metadata(losses: list[float], seconds: float, tol: float) -> TrainProcessMetadata:
    converged = len(losses) >= 2 and abs(losses[-2] - losses[-1]) < tol
    return TrainProcessMetadata(
        training_time=seconds,
        converged=converged,
        training_losses={f"epoch_{i + 1}": loss for i, loss in enumerate(losses)},
    )


@app.train()
def train_fn(msg: Message, context: Context) -> Message:
    """Local training; the reply carries the metadata as JSON in a ConfigRecord."""
    start = time.perf_counter()
    params = msg.content["arrays"].to_numpy_ndarrays()
    config = msg.content["config"]
    data, pid, seed = _setup(context)
    new_params, losses = train(
        params,
        data.x_train,
        data.y_train,
        epochs=int(config["local-epochs"]),
        lr=float(config["learning-rate"]),
        batch_size=int(config["batch-size"]),
        rng=batch_rng(seed, pid, int(config["server-round"])),
    )
    meta = _metadata(
        losses,
        time.perf_counter() - start,
        float(context.run_config.get("convergence-tol", 0.005)),
    )
    content = RecordDict(
        {
            "arrays": ArrayRecord(new_params),
            "metrics": MetricRecord(
                {"train_loss": losses[-1], "num-examples": len(data.y_train)}
            ),
            RECORD: ConfigRecord({KEY: meta.to_bytes()}),
        }
    )
    return Message(content=content, reply_to=msg)


@app.train("custom")
def personalize(msg: Message, context: Context) -> Message:
    """``train.custom``: fine-tune the final global model on local data only.

    The fine-tuned weights stay with the data owner; the reply has metrics and
    the metadata only.
    """
    start = time.perf_counter()
    params = msg.content["arrays"].to_numpy_ndarrays()
    config = msg.content["config"]
    data, pid, seed = _setup(context)
    tuned, losses = train(
        params,
        data.x_train,
        data.y_train,
        epochs=int(config["finetune-epochs"]),
        lr=float(config["learning-rate"]),
        batch_size=int(config["batch-size"]),
        rng=batch_rng(seed, pid, FINETUNE_STREAM),
    )
    meta = _metadata(
        losses,
        time.perf_counter() - start,
        float(context.run_config.get("convergence-tol", 0.005)),
    )
    metrics = MetricRecord(
        {
            "global_acc": accuracy(params, data.x_test, data.y_test),
            "personal_acc": accuracy(tuned, data.x_test, data.y_test),
            "num-examples": len(data.y_test),
        }
    )
    content = RecordDict(
        {"metrics": metrics, RECORD: ConfigRecord({KEY: meta.to_bytes()})}
    )
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate_fn(msg: Message, context: Context) -> Message:
    params = msg.content["arrays"].to_numpy_ndarrays()
    data, _, _ = _setup(context)
    metrics = MetricRecord(
        {
            "eval_loss": log_loss(params, data.x_test, data.y_test),
            "eval_acc": accuracy(params, data.x_test, data.y_test),
            "num-examples": len(data.y_test),
        }
    )
    return Message(content=RecordDict({"metrics": metrics}), reply_to=msg)
