"""ClientApp: answers the researcher's queries with aggregates, never rows."""

from __future__ import annotations

from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fed_analytics.task import NUMERIC, SEED, Table, histogram, load_table

app = ClientApp()


def _table(context: Context) -> Table:
    table = load_table(
        dict(context.node_config), int(context.run_config.get("seed", SEED))
    )
    n = len(table["age"])
    min_rows = int(context.run_config.get("min-rows", 1))
    if n < min_rows:
        # Too few rows: aggregates could identify individuals. The error reply
        # names the reason only.
        raise PermissionError(f"refusing to answer about {n} < {min_rows} rows")
    return table


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Histograms of the requested columns over the requested bins, plus counts."""
    cfg: ConfigRecord = msg.content["config"]
    table = _table(context)
    out: dict[str, int | float | list[int] | list[float]] = {
        "count": len(table["age"]),
        "positives": int(table["outcome"].sum()),
    }
    for col in cfg["columns"]:  # type: ignore[union-attr]
        edges = [float(e) for e in cfg[f"edges.{col}"]]  # type: ignore[union-attr]
        out[f"hist.{col}"] = histogram(table[str(col)], edges)
    return Message(RecordDict({"metrics": MetricRecord(out)}), reply_to=msg)


@app.query("stats")
def stats(msg: Message, context: Context) -> Message:
    """``query.stats``: count, sum, sum of squares, min and max of numeric columns."""
    table = _table(context)
    out: dict[str, int | float | list[int] | list[float]] = {"count": len(table["age"])}
    for col in NUMERIC:
        v = table[col]
        out[f"sum.{col}"] = float(v.sum())
        out[f"sumsq.{col}"] = float((v * v).sum())
        out[f"min.{col}"] = float(v.min())
        out[f"max.{col}"] = float(v.max())
    return Message(RecordDict({"stats": MetricRecord(out)}), reply_to=msg)
