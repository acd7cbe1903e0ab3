"""A run's per-round metrics (its history): captured, saved as JSON, plotted.

Flower's strategies return a ``Result`` from ``Strategy.start`` holding, per
round, the aggregated ClientApp train and evaluate metrics and the ServerApp's
own evaluation (a legacy ``Server.fit`` returns the same as a ``History``). The researcher side captures it (:func:`capture_history`),
saves it next to its checkpoint (``history.json`` in the app's private state)
and ``syft_flwr simulate --history-out/--plot-out`` or a notebook read it back
(:func:`load_history`, :func:`plot_history`).

The history is a plain dict, the same shape as the JSON file::

    {
      "rounds": [1, 2, 3],
      "train_metrics_clientapp": {"1": {"loss": 0.7}, ...},
      "evaluate_metrics_clientapp": {"1": {"accuracy": 0.8}, ...},
      "evaluate_metrics_serverapp": {"0": {"accuracy": 0.5}, ...}
    }

Round numbers are strings (JSON object keys); the sections are named as in
Flower's ``Result``.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from syft_flwr.client.protocol import SyftFlwrClient
    from syft_flwr.simulation import SimulationResult

__all__ = [
    "HISTORY_FILE",
    "SECTIONS",
    "capture_history",
    "history_from_result",
    "load_history",
    "plot_history",
    "save_history",
    "simulation_history",
]

#: File name of the saved history, in the researcher's private state for the app.
HISTORY_FILE = "history.json"

#: The per-round sections of Flower's ``Result``, with a title for plots.
SECTIONS = {
    "train_metrics_clientapp": "train (data owners, aggregated)",
    "evaluate_metrics_clientapp": "evaluate (data owners, aggregated)",
    "evaluate_metrics_serverapp": "evaluate (researcher)",
}

_sink: contextvars.ContextVar[list[Any] | None] = contextvars.ContextVar(
    "syft_flwr_history_sink", default=None
)
_install_lock = threading.Lock()
_installed = False


def _value(v: Any) -> Any:
    """A metric value as JSON (Flower allows numbers and lists of numbers)."""
    if isinstance(v, (list, tuple)):
        return [_value(x) for x in v]
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return v
    return float(v) if isinstance(v, float) else int(v)


# Where the legacy ``flwr.server.History`` keeps each section: (losses, metrics).
_LEGACY = {
    "train_metrics_clientapp": (None, "metrics_distributed_fit"),
    "evaluate_metrics_clientapp": ("losses_distributed", "metrics_distributed"),
    "evaluate_metrics_serverapp": ("losses_centralized", "metrics_centralized"),
}


def _legacy_sections(history: Any) -> dict[str, dict[int, dict[str, Any]]]:
    """A legacy ``History`` (lists of ``(round, value)``) as per-round sections."""
    out: dict[str, dict[int, dict[str, Any]]] = {}
    for section, (losses, metrics) in _LEGACY.items():
        per_round: dict[int, dict[str, Any]] = {}
        series = dict(getattr(history, metrics, None) or {})
        if losses is not None:
            series["loss"] = getattr(history, losses, None) or []
        for name, pairs in series.items():
            for r, v in pairs:
                per_round.setdefault(int(r), {})[name] = v
        out[section] = per_round
    return out


def history_from_result(result: Any) -> dict[str, Any]:
    """The history of one Flower run result.

    Parameters
    ----------
    result : flwr.serverapp.strategy.Result or flwr.server.History
        What ``Strategy.start`` returns (Message API: the three
        ``dict[int, MetricRecord]`` sections of :data:`SECTIONS`, missing ones
        empty), or the ``History`` of a legacy ``Server.fit`` (its losses
        become a ``loss`` metric).

    Returns
    -------
    dict
        ``{"rounds": [...], <section>: {"<round>": {metric: value}}}``.
    """
    if hasattr(result, "losses_distributed"):  # legacy flwr.server.History
        sections: dict[str, Any] = _legacy_sections(result)
    else:
        sections = {s: getattr(result, s, None) or {} for s in SECTIONS}
    out: dict[str, Any] = {}
    rounds: set[int] = set()
    for section in SECTIONS:
        per_round = sections[section]
        out[section] = {
            str(r): {k: _value(v) for k, v in dict(metrics).items()}
            for r, metrics in sorted(per_round.items(), key=lambda kv: int(kv[0]))
        }
        rounds.update(int(r) for r in per_round if int(r) > 0)
    return {"rounds": sorted(rounds), **out}


def _recording(original: Any, pick: Any) -> Any:
    """``original`` that also hands ``pick(its result)`` to an active capture."""

    @functools.wraps(original)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(self, *args, **kwargs)
        sink = _sink.get()
        if sink is not None:
            sink.append(pick(result))
        return result

    return wrapper


def _install() -> None:
    """Wrap ``Strategy.start`` (Message API) and the legacy ``Server.fit`` once,
    so an active :func:`capture_history` sees what they return."""
    global _installed
    with _install_lock:
        if _installed:
            return
        from flwr.server import Server
        from flwr.serverapp.strategy import Strategy

        Strategy.start = _recording(Strategy.start, lambda r: r)  # type: ignore[method-assign]
        # Server.fit returns (History, elapsed seconds)
        Server.fit = _recording(Server.fit, lambda r: r[0])  # type: ignore[method-assign]
        _installed = True


@contextlib.contextmanager
def capture_history() -> Iterator[list[dict[str, Any]]]:
    """Collect the history of every ``Strategy.start`` (or legacy ``Server.fit``)
    run inside the block.

    Only the current thread (context) is captured, so data owners running as
    threads of the same process do not interfere. Strategies that override
    ``start`` itself, or servers that override ``fit``, are not seen (Flower's
    built-in ones do not).

    Yields
    ------
    list of dict
        Filled when the block ends: one history per ``Strategy.start`` call.
    """
    _install()
    results: list[Any] = []
    token = _sink.set(results)
    captured: list[dict[str, Any]] = []
    try:
        yield captured
    finally:
        _sink.reset(token)
        captured.extend(history_from_result(r) for r in results)


def save_history(folder: str | Path, history: dict[str, Any]) -> Path:
    """Write ``history`` as ``folder/history.json`` (atomically: never half a file).

    Returns
    -------
    Path
        The file written.
    """
    path = Path(folder) / HISTORY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(history, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def load_history(client: SyftFlwrClient, app_name: str) -> dict[str, Any] | None:
    """The history of the last run of ``app_name`` this researcher finished.

    Parameters
    ----------
    client : SyftFlwrClient
        The researcher's client (its private state holds the file).
    app_name : str
        The app name on the wire (``ProjectConfig.flwr_app_name``).

    Returns
    -------
    dict or None
        None when no run of that app has finished here yet.
    """
    folder = client.state_dir(app_name)
    if folder is None:
        return None
    try:
        return json.loads((Path(folder) / HISTORY_FILE).read_text())
    except FileNotFoundError:
        return None


def simulation_history(result: SimulationResult) -> dict[str, Any] | None:
    """The history the researcher of a finished :func:`~syft_flwr.simulation.simulate`
    run saved (None when it saved none, e.g. the ServerApp failed).

    The researcher's private state is searched for the newest ``history.json``
    written during the run, whatever app name the run used on the wire.
    """
    import time

    from syft_flwr.client.syft_core_client import SyftCoreClient

    researcher = SyftCoreClient.load(result.researcher.config_path)
    state = Path(researcher.state_dir("_")).parent
    started = time.time() - result.seconds - 1.0
    files = [p for p in state.glob(f"*/{HISTORY_FILE}") if p.stat().st_mtime >= started]
    if not files:
        return None
    newest = max(files, key=lambda p: p.stat().st_mtime)
    return json.loads(newest.read_text())


def plot_history(history: dict[str, Any], path: str | Path | None = None) -> Figure:
    """Plot each metric per round, one panel per section that has metrics.

    Uses matplotlib's object API (no pyplot), so it draws with the Agg backend
    in scripts and threads, and a notebook shows the returned figure.

    Parameters
    ----------
    history : dict
        As returned by :func:`history_from_result` or :func:`load_history`.
    path : str or Path, optional
        Also save the figure there (PNG, by its extension).

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    panels = [(s, t) for s, t in SECTIONS.items() if history.get(s)]
    fig = Figure(figsize=(5 * max(1, len(panels)), 3.6), layout="constrained")
    axes = fig.subplots(1, max(1, len(panels)), squeeze=False)[0]
    if not panels:
        axes[0].text(0.5, 0.5, "no metrics recorded", ha="center", va="center")
        axes[0].set_axis_off()
    for ax, (section, title) in zip(axes, panels, strict=False):
        per_round = history[section]
        names = sorted({k for m in per_round.values() for k in m})
        for name in names:
            points = [
                (int(r), m[name])
                for r, m in per_round.items()
                if isinstance(m.get(name), (int, float))
            ]
            points.sort()
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", label=name)
        ax.set_title(title)
        ax.set_xlabel("round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # rounds are whole
        ax.grid(alpha=0.3)
        if names:
            ax.legend()
    if path is not None:
        fig.savefig(Path(path), dpi=100)
    return fig
