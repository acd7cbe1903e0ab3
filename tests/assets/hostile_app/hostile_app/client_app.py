"""ClientApp: honest partitions add (partition-id + 1); one may send hostile values."""

import numpy as np
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

app = ClientApp()


def _hostile(kind: str, model: np.ndarray) -> np.ndarray:
    if kind == "nan":
        bad = model.copy()
        bad[-1] = np.nan
        return bad
    if kind == "inf":
        # Finite inputs whose product overflows float32 on the data owner's side.
        with np.errstate(over="ignore"):
            return (model + np.float32(1e38)) * np.float32(1e3)
    if kind == "shape":
        return np.ones(model.size - 1, dtype=model.dtype)
    if kind == "dtype":
        return model.astype(np.float64)
    if kind == "nan-weight":
        return model  # honest arrays; the weight is NaN (see train)
    if kind == "huge":
        # Finite and representable: within-range poisoning (not refused).
        return np.full_like(model, 1e38)
    raise ValueError(f"unknown hostile-kind {kind!r}")


@app.train()
def train(msg: Message, context: Context) -> Message:
    cfg = context.run_config
    pid = int(context.node_config["partition-id"])
    model = msg.content["arrays"].to_numpy_ndarrays()[0]
    examples = 10.0
    if pid == int(cfg["hostile-partition"]):
        model = _hostile(str(cfg["hostile-kind"]), model)
        if cfg["hostile-kind"] == "nan-weight":
            examples = float("nan")  # FedAvg weights every reply by it
    else:
        model = model + np.float32(pid + 1)
    return Message(
        RecordDict(
            {
                "arrays": ArrayRecord([model]),
                "metrics": MetricRecord({"num-examples": examples}),
            }
        ),
        reply_to=msg,
    )


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    model = msg.content["arrays"].to_numpy_ndarrays()[0]
    return Message(
        RecordDict(
            {"metrics": MetricRecord({"num-examples": 10, "mean": float(model.mean())})}
        ),
        reply_to=msg,
    )
