"""ClientApp: report the checksum of the received model, send back ``model + 1``."""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from syft_flwr_bigmodel import digest

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    model = msg.content["model"]["w"].numpy()
    received = digest(model)
    back = model + np.float32(1.0)
    return Message(
        RecordDict(
            {
                "model": ArrayRecord(array_dict={"w": Array(back)}),
                "info": ConfigRecord(
                    {
                        "received_sha256": received,
                        "expected_sha256": str(msg.content["config"]["sha256"]),
                    }
                ),
            }
        ),
        reply_to=msg,
    )
