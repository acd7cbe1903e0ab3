"""ClientApp: "training" adds 1.0 to every weight, so the reply is model-sized."""

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    arrays = msg.content["arrays"].to_numpy_ndarrays()
    return Message(
        RecordDict(
            {
                "arrays": ArrayRecord([a + 1.0 for a in arrays]),
                "metrics": MetricRecord({"num-examples": 10}),
            }
        ),
        reply_to=msg,
    )
