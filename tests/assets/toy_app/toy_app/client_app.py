"""ClientApp: adds 1.0 to every weight; can fail or be slow on demand."""

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

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    cfg = context.run_config
    pid = int(context.node_config.get("partition-id", -2))
    if pid == int(cfg.get("fail-partition", -1)):
        secret = 123.456
        raise ValueError(f"private value {secret}")
    time.sleep(float(cfg.get("slow-seconds", 0.0)))
    calls = context.state.config_records.get("calls", ConfigRecord({"n": 0}))
    calls["n"] = int(calls["n"]) + 1
    context.state["calls"] = calls
    arrays = msg.content["arrays"].to_numpy_ndarrays()
    return Message(
        RecordDict(
            {
                "arrays": ArrayRecord([a + 1.0 for a in arrays]),
                "metrics": MetricRecord(
                    {
                        "num-examples": 10,
                        "calls": int(calls["n"]),
                        "node": context.node_id % 1000,
                    }
                ),
            }
        ),
        reply_to=msg,
    )


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    arrays = msg.content["arrays"].to_numpy_ndarrays()
    return Message(
        RecordDict(
            {
                "metrics": MetricRecord(
                    {"num-examples": 10, "mean": float(arrays[0].mean())}
                )
            }
        ),
        reply_to=msg,
    )
