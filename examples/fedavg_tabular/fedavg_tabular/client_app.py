"""ClientApp: trains and evaluates the global model on this data owner's data."""

from __future__ import annotations

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedavg_tabular.task import (
    SEED,
    accuracy,
    batch_rng,
    load_local_data,
    log_loss,
    train,
)

app = ClientApp()


def _seed(context: Context) -> int:
    return int(context.run_config.get("seed", SEED))


@app.train()
def train_fn(msg: Message, context: Context) -> Message:
    """Run a few local epochs from the global model; reply with the new model."""
    params = msg.content["arrays"].to_numpy_ndarrays()
    config = msg.content["config"]
    seed = _seed(context)
    data = load_local_data(dict(context.node_config), seed)
    pid = int(context.node_config.get("partition-id", 0))
    new_params, losses = train(
        params,
        data.x_train,
        data.y_train,
        epochs=int(config["local-epochs"]),
        lr=float(config["learning-rate"]),
        batch_size=int(config["batch-size"]),
        rng=batch_rng(seed, pid, int(config["server-round"])),
    )
    metrics = MetricRecord(
        {"train_loss": losses[-1], "num-examples": len(data.y_train)}
    )
    content = RecordDict({"arrays": ArrayRecord(new_params), "metrics": metrics})
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate_fn(msg: Message, context: Context) -> Message:
    """Evaluate the global model on this data owner's test split."""
    params = msg.content["arrays"].to_numpy_ndarrays()
    data = load_local_data(dict(context.node_config), _seed(context))
    metrics = MetricRecord(
        {
            "eval_loss": log_loss(params, data.x_test, data.y_test),
            "eval_acc": accuracy(params, data.x_test, data.y_test),
            "num-examples": len(data.y_test),
        }
    )
    return Message(content=RecordDict({"metrics": metrics}), reply_to=msg)
