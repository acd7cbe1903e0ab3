"""ServerApp in upstream's style: one QUERY to every node, sums written to OUTPUT_DIR."""

import json
import os
import time
from pathlib import Path

from flwr.app import Context, Message, MessageType, RecordDict
from flwr.serverapp import Grid, ServerApp

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    min_nodes = int(context.run_config["min-nodes"])
    node_ids = list(grid.get_node_ids())
    while len(node_ids) < min_nodes:
        time.sleep(1)
        node_ids = list(grid.get_node_ids())
    messages = [
        Message(RecordDict(), dst_node_id=nid, message_type=MessageType.QUERY)
        for nid in node_ids
    ]
    replies = list(grid.send_and_receive(messages))
    ok = [r for r in replies if not r.has_error()]
    count = sum(int(r.content["stats"]["count"]) for r in ok)
    total = sum(float(r.content["stats"]["sum"]) for r in ok)
    out = Path(os.environ.get("OUTPUT_DIR") or ".") / "analytics.json"
    out.write_text(json.dumps({"count": count, "sum": total, "replies": len(ok)}))
    print(f"ANALYTICS count={count} sum={total}", flush=True)
