"""ClientApp in upstream's style: data from DATA_DIR, partition from node_config."""

import numpy as np
from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from syft_flwr.utils import get_syftbox_dataset_path, run_syft_flwr

app = ClientApp()


@app.query()
def query(msg: Message, context: Context) -> Message:
    # Upstream apps read these; upstream filled partition-id=0, num-partitions=1.
    partition_id = int(context.node_config["partition-id"])
    num_partitions = int(context.node_config["num-partitions"])
    print(f"PARTITION {partition_id}/{num_partitions}", flush=True)
    if bool(context.run_config["fail-all"]):
        raise RuntimeError("this app was told to fail")
    assert run_syft_flwr()
    values = np.loadtxt(get_syftbox_dataset_path() / "values.csv", ndmin=1)
    return Message(
        RecordDict(
            {
                "stats": MetricRecord(
                    {
                        "count": int(values.size),
                        "sum": float(values.sum()),
                        "partition-id": partition_id,
                        "num-partitions": num_partitions,
                    }
                )
            }
        ),
        reply_to=msg,
    )
