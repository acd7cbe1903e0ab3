"""ServerApp: sends ``query`` and ``query.stats`` messages and sums the answers."""

from __future__ import annotations

import json
import logging
import math
import time

from flwr.app import (
    ConfigRecord,
    Context,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp import Grid, ServerApp

from fed_analytics.task import EDGES, NUMERIC

app = ServerApp()
log = logging.getLogger("fed_analytics")

RESULT_PREFIX = "SYFT_FLWR_RESULT"


def _wait_for_nodes(grid: Grid, min_nodes: int, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        nodes = list(grid.get_node_ids())
        if len(nodes) >= min_nodes or time.monotonic() > deadline:
            return nodes
        time.sleep(0.1)


def ask(
    grid: Grid,
    nodes: list[int],
    message_type: str,
    content: RecordDict,
    timeout: float,
) -> list[MetricRecord]:
    """Send one message per node; return the MetricRecord of each good reply.

    A data owner that refuses (or fails) is logged and left out of the totals.
    """
    messages = [
        Message(content=content, dst_node_id=nid, message_type=message_type)
        for nid in nodes
    ]
    records: list[MetricRecord] = []
    for reply in grid.send_and_receive(messages, timeout=timeout):
        if reply.has_error():
            log.warning(
                "node %d did not answer %s: %s",
                reply.metadata.src_node_id,
                message_type,
                reply.error.reason,
            )
            continue
        records.extend(reply.content.metric_records.values())
    return records


def _ints(value: object) -> list[int]:
    assert isinstance(value, list)
    return [int(x) for x in value]


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Histograms and counts, then moments; print and store the global totals."""
    rc = context.run_config
    timeout = float(rc["round-timeout"])
    nodes = _wait_for_nodes(grid, int(rc.get("min-nodes", 2)), timeout)

    # 1. Histograms and counts: MessageType.QUERY, handled by @app.query().
    cfg = ConfigRecord({"columns": list(EDGES)})
    for col, edges in EDGES.items():
        cfg[f"edges.{col}"] = edges
    answers = ask(grid, nodes, MessageType.QUERY, RecordDict({"config": cfg}), timeout)
    count = sum(int(rec["count"]) for rec in answers)  # type: ignore[call-overload]
    positives = sum(int(rec["positives"]) for rec in answers)  # type: ignore[call-overload]
    hists = {
        col: [
            sum(bins)
            for bins in zip(*(_ints(r[f"hist.{col}"]) for r in answers), strict=True)
        ]
        for col in EDGES
    }

    # 2. Moments, minima and maxima: the custom action "query.stats".
    stats = ask(
        grid,
        nodes,
        f"{MessageType.QUERY}.stats",
        RecordDict({"config": ConfigRecord()}),
        timeout,
    )
    n = sum(int(r["count"]) for r in stats)  # type: ignore[call-overload]
    if not answers or n == 0:
        raise RuntimeError("no data owner answered the queries")
    moments: dict[str, float] = {}
    for col in NUMERIC:
        total = math.fsum(float(r[f"sum.{col}"]) for r in stats)  # type: ignore[arg-type]
        total_sq = math.fsum(float(r[f"sumsq.{col}"]) for r in stats)  # type: ignore[arg-type]
        mean = total / n
        moments[f"mean.{col}"] = mean
        moments[f"std.{col}"] = math.sqrt(max(0.0, total_sq / n - mean * mean))
        moments[f"min.{col}"] = min(float(r[f"min.{col}"]) for r in stats)  # type: ignore[arg-type]
        moments[f"max.{col}"] = max(float(r[f"max.{col}"]) for r in stats)  # type: ignore[arg-type]

    context.state["histograms"] = MetricRecord(
        {
            "count": count,
            "positives": positives,
            **{f"hist.{c}": h for c, h in hists.items()},
        }
    )
    context.state["stats"] = MetricRecord({"count": n, **moments})
    summary: dict[str, object] = {
        "example": "fed_analytics",
        "data_owners": len(answers),
        "count": count,
        "positives": positives,
        "prevalence": round(positives / max(1, count), 6),
        **{f"mean_{c}": round(moments[f"mean.{c}"], 4) for c in NUMERIC},
        **{f"hist_{c}": h for c, h in hists.items()},
    }
    print(f"{RESULT_PREFIX} {json.dumps(summary, sort_keys=True)}", flush=True)
