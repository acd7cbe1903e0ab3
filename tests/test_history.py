"""The run history: from Flower's Result to JSON and a PNG plot."""

from __future__ import annotations

import json
from pathlib import Path

from flwr.app import MetricRecord
from flwr.serverapp.strategy import Result

from syft_flwr.client import MemoryClient
from syft_flwr.history import (
    capture_history,
    history_from_result,
    load_history,
    plot_history,
    save_history,
)
from syft_flwr.transports.memory import MemoryHub


def _result() -> Result:
    return Result(
        train_metrics_clientapp={
            1: MetricRecord({"loss": 0.9}),
            2: MetricRecord({"loss": 0.5}),
        },
        evaluate_metrics_serverapp={
            0: MetricRecord({"accuracy": 0.1}),
            2: MetricRecord({"accuracy": 0.8, "per_class": [0.7, 0.9]}),
        },
    )


def test_history_from_result_keeps_every_round_and_section() -> None:
    h = history_from_result(_result())
    assert h["rounds"] == [1, 2]  # round 0 is the initial evaluation, not a round
    assert h["train_metrics_clientapp"] == {"1": {"loss": 0.9}, "2": {"loss": 0.5}}
    assert h["evaluate_metrics_serverapp"]["2"]["per_class"] == [0.7, 0.9]
    assert h["evaluate_metrics_clientapp"] == {}
    assert json.loads(json.dumps(h)) == h  # plain JSON


def test_save_then_load_through_the_clients_private_state(tmp_path: Path) -> None:
    client = MemoryClient("r@example.org", MemoryHub(), state_dir=tmp_path)
    assert load_history(client, "app") is None
    h = history_from_result(_result())
    save_history(client.state_dir("app"), h)
    assert load_history(client, "app") == h


def test_legacy_history_becomes_the_same_sections() -> None:
    from flwr.server import History

    legacy = History()
    legacy.add_loss_distributed(1, 0.7)
    legacy.add_loss_distributed(2, 0.4)
    legacy.add_metrics_distributed_fit(2, {"examples": 30})
    legacy.add_loss_centralized(0, 0.9)
    legacy.add_metrics_centralized(10, {"accuracy": 0.8})
    h = history_from_result(legacy)
    assert h["rounds"] == [1, 2, 10]
    assert h["evaluate_metrics_clientapp"] == {"1": {"loss": 0.7}, "2": {"loss": 0.4}}
    assert h["train_metrics_clientapp"] == {"2": {"examples": 30}}
    server = h["evaluate_metrics_serverapp"]
    assert list(server) == ["0", "10"]  # rounds in numeric order, not "10" < "2"
    assert server["10"] == {"accuracy": 0.8}


def test_capture_history_sees_strategy_start() -> None:
    from flwr.server import Server
    from flwr.serverapp.strategy import Strategy

    original, original_fit = Strategy.start, Server.fit
    try:
        Strategy.start = lambda self, **kw: _result()  # type: ignore[method-assign]
        import syft_flwr.history as history_module

        history_module._installed = False  # wrap the stub
        with capture_history() as captured:
            Strategy.start(None)  # type: ignore[arg-type]  # as FedAvg().start(...)
        Strategy.start(None)  # type: ignore[arg-type]  # outside the block: not seen
    finally:
        Strategy.start = original  # type: ignore[method-assign]
        Server.fit = original_fit  # type: ignore[method-assign]
        history_module._installed = False
    assert len(captured) == 1 and captured[0]["rounds"] == [1, 2]


def test_plot_history_writes_a_png(tmp_path: Path) -> None:
    png = tmp_path / "plot.png"
    fig = plot_history(history_from_result(_result()), png)
    assert len(fig.axes) == 2  # train and server-side evaluate; no empty panel
    data = png.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5000
    empty = plot_history({"rounds": []}, tmp_path / "empty.png")
    assert len(empty.axes) == 1 and (tmp_path / "empty.png").stat().st_size > 0
