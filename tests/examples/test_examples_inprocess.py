"""Every example, run in one process over the in-memory transport with encryption on.

The researcher's ServerApp runs in the main thread (``run_researcher`` with a
``SyftGrid``); each data owner serves the ClientApp in a daemon thread
(``run_data_owner``) until the researcher's stop signal. ``examples/run_local.py``
wires the two sides together; these tests check what each example computes and
that every data owner thread exits.

Thresholds are the measured values minus a small margin (runs are deterministic:
fedavg_tabular and legacy_numpy reach 0.925, custom_messages 0.9075, dp_fedmed a
Dice of 0.9147).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import json
import logging
import math
import os
import pickle
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any
from unittest import mock

import numpy as np
import pytest
from flwr.common.config import validate_config

from syft_flwr.project import load_project

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES_DIR = ROOT / "examples"
EXAMPLES = [
    "fedavg_tabular",
    "legacy_numpy",
    "fed_analytics",
    "custom_messages",
    "dp_fedmed",
]
DATA_OWNERS = ["do1@example.org", "do2@example.org"]
RESULT_PREFIX = "SYFT_FLWR_RESULT "

pytestmark = pytest.mark.timeout(120)


def example_module(example: str, module: str) -> ModuleType:
    """Import ``<example>.<module>`` from its app folder."""
    path = str(EXAMPLES_DIR / example)
    if path not in sys.path:
        sys.path.insert(0, path)
    return importlib.import_module(f"{example}.{module}")


def _run_local() -> Any:
    if str(EXAMPLES_DIR) not in sys.path:
        sys.path.insert(0, str(EXAMPLES_DIR))
    return importlib.import_module("run_local")


def parse_result(stdout: str) -> dict[str, Any]:
    """The JSON of the (last) ``SYFT_FLWR_RESULT`` line."""
    lines = [ln for ln in stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
    assert lines, f"no {RESULT_PREFIX.strip()} line in the output:\n{stdout[-2000:]}"
    return json.loads(lines[-1][len(RESULT_PREFIX) :])


class Outcome:
    """A finished local run: its server Context state, summary and data owners."""

    def __init__(self, run: Any, stdout: str, output_dir: Path) -> None:
        self.run = run
        self.state = run.context.state
        self.stdout = stdout
        self.summary = parse_result(stdout)
        self.output_dir = output_dir

    def final_weights(self) -> list[np.ndarray]:
        return self.state["final_model"].to_numpy_ndarrays()


def run_example(
    example: str, tmp: Path, overrides: str | None = None, **kwargs: Any
) -> Outcome:
    """Run ``example`` over the in-memory network; capture its stdout and outputs."""
    out_dir = tmp / f"{example}-output"
    buf = io.StringIO()
    with (
        mock.patch.dict(os.environ, {"OUTPUT_DIR": str(out_dir)}),
        contextlib.redirect_stdout(buf),
    ):
        run = _run_local().run_local(example, overrides=overrides, **kwargs)
    assert not run.errors, run.errors
    # Each data owner returned after the stop signal, and its thread is gone.
    alive = [t.name for t in run.threads if t.is_alive()]
    assert not alive, f"data owner threads still running: {alive}"
    for handler in run.handlers:
        assert handler is not None
        assert handler.stopped_reason == "Training complete"
    return Outcome(run, buf.getvalue(), out_dir)


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Outcome]]:
    """Each example's default run, done once for the module."""
    cache: dict[str, Outcome] = {}

    class _Lazy(dict):  # type: ignore[type-arg]
        def __missing__(self, key: str) -> Outcome:
            cache[key] = run_example(key, tmp_path_factory.mktemp(key))
            self[key] = cache[key]
            return cache[key]

    yield _Lazy()


# -- app folders ------------------------------------------------------------------
@pytest.mark.parametrize("example", EXAMPLES)
def test_app_folder_is_a_valid_flower_and_syft_flwr_app(example: str) -> None:
    app_dir = EXAMPLES_DIR / example
    raw = tomllib.loads((app_dir / "pyproject.toml").read_text())
    ok, errors, _warnings = validate_config(raw, check_module=True, project_dir=app_dir)
    assert ok, errors
    cfg = load_project(app_dir)
    assert cfg.aggregator == "researcher@example.org"
    assert list(cfg.datasites) == DATA_OWNERS
    assert cfg.transport == "syftbox"
    assert cfg.app_name == example
    assert {"num-server-rounds", "round-timeout"} <= cfg.app_config.keys()
    assert all(isinstance(v, bool | int | float | str) for v in cfg.app_config.values())
    assert (app_dir / "README.md").is_file()


# -- fedavg_tabular and legacy_numpy -----------------------------------------------
@pytest.mark.parametrize(
    ("example", "messages_per_owner"),
    [
        ("fedavg_tabular", 10),  # 5 x (train + evaluate)
        ("legacy_numpy", 11),  # get_properties + 5 x (fit + evaluate)
    ],
)
def test_logistic_regression_learns(
    outcomes: dict[str, Outcome], example: str, messages_per_owner: int
) -> None:
    o = outcomes[example]
    task = example_module(example, "task")
    weights = o.final_weights()
    x_test, y_test = task.central_test_set()
    acc = task.accuracy(weights, x_test, y_test)
    assert acc >= 0.90
    assert o.summary["accuracy"] == pytest.approx(acc, abs=1e-4)
    assert o.summary["rounds"] == 5
    assert o.summary["weights_sha256"] == task.checksum(weights)
    saved = np.load(o.output_dir / "final_model.npz")
    np.testing.assert_array_equal(saved["weights"], weights[0])
    np.testing.assert_array_equal(saved["bias"], weights[1])
    assert [h.handled for h in o.run.handlers] == [messages_per_owner] * 2


def test_legacy_get_properties_reached_every_data_owner(
    outcomes: dict[str, Outcome],
) -> None:
    o = outcomes["legacy_numpy"]
    task = example_module("legacy_numpy", "task")
    props = o.state["client_properties"]
    assert list(props["partition-id"]) == [0, 1]
    sizes = [len(task.load_partition(i, 2).y_train) for i in range(2)]
    assert list(props["num-train"]) == sizes
    assert sizes[0] < sizes[1]  # unequal partitions exercise the weighting


def _prepare_data_main(example: str) -> Any:
    """``main`` of ``examples/<example>/prepare_data.py``."""
    example_module(example, "task")  # puts the app folder on sys.path
    spec = importlib.util.spec_from_file_location(
        f"{example}_prepare_data", EXAMPLES_DIR / example / "prepare_data.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.mark.parametrize(
    "example", ["fedavg_tabular", "legacy_numpy", "custom_messages", "dp_fedmed"]
)
def test_client_reads_data_dir_csv(
    example: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``prepare_data.py`` output in ``DATA_DIR`` is exactly the generated partition."""
    with contextlib.redirect_stdout(io.StringIO()):
        _prepare_data_main(example)(
            ["--partition-id", "1", "--num-partitions", "2", "--out", str(tmp_path)]
        )
    task = example_module(example, "task")
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    got = task.load_local_data({"partition-id": 0, "num-partitions": 1})
    want = task.load_partition(1, 2)
    for name in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name))


def test_analytics_reads_data_dir_csv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with contextlib.redirect_stdout(io.StringIO()):
        _prepare_data_main("fed_analytics")(
            ["--partition-id", "1", "--out", str(tmp_path)]
        )
    task = example_module("fed_analytics", "task")
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    got = task.load_table({"partition-id": 0})
    want = task.generate_partition(1)
    for col in task.COLUMNS:
        np.testing.assert_array_equal(got[col], want[col])


def test_single_data_owner_on_data_dir(tmp_path: Path) -> None:
    """A run whose only data owner reads its CSVs from ``DATA_DIR``."""
    task = example_module("fedavg_tabular", "task")
    task.write_partition_csv(task.load_partition(0, 1), tmp_path / "data")
    with mock.patch.dict(os.environ, {"DATA_DIR": str(tmp_path / "data")}):
        o = run_example(
            "fedavg_tabular",
            tmp_path,
            overrides="min-nodes=1 num-server-rounds=2",
            data_owners=["do1@example.org"],
        )
    assert o.summary["rounds"] == 2
    assert o.summary["accuracy"] >= 0.85
    assert o.run.handlers[0].handled == 4


# -- fed_analytics ----------------------------------------------------------------
def _analytics_truth(partitions: list[int]) -> dict[str, np.ndarray]:
    task = example_module("fed_analytics", "task")
    tables = [task.generate_partition(i) for i in partitions]
    return {c: np.concatenate([t[c] for t in tables]) for c in task.COLUMNS}


def test_histograms_sum_to_the_known_totals(outcomes: dict[str, Outcome]) -> None:
    o = outcomes["fed_analytics"]
    task = example_module("fed_analytics", "task")
    truth = _analytics_truth([0, 1])
    hist = o.state["histograms"]
    assert hist["count"] == len(truth["age"]) == 450
    assert hist["positives"] == int(truth["outcome"].sum())
    for col, edges in task.EDGES.items():
        want, _ = np.histogram(truth[col], bins=np.asarray(edges))
        assert list(hist[f"hist.{col}"]) == want.tolist()
        assert sum(hist[f"hist.{col}"]) == 450  # the edges cover every value
    assert o.summary["hist_age"] == list(hist["hist.age"])
    assert o.summary["data_owners"] == 2


def test_query_stats_gives_exact_global_moments(outcomes: dict[str, Outcome]) -> None:
    stats = outcomes["fed_analytics"].state["stats"]
    truth = _analytics_truth([0, 1])
    assert stats["count"] == 450
    for col in ("age", "bmi", "glucose"):
        assert stats[f"mean.{col}"] == pytest.approx(truth[col].mean(), rel=1e-12)
        assert stats[f"std.{col}"] == pytest.approx(truth[col].std(), rel=1e-9)
        assert stats[f"min.{col}"] == truth[col].min()
        assert stats[f"max.{col}"] == truth[col].max()


def test_data_owner_below_min_rows_refuses(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """do1 holds 150 rows; with min-rows=200 it refuses and only do2 is counted."""
    with caplog.at_level(logging.WARNING, logger="fed_analytics"):
        o = run_example("fed_analytics", tmp_path, overrides="min-rows=200")
    refusals = [r.getMessage() for r in caplog.records if r.name == "fed_analytics"]
    assert len(refusals) == 2  # the query and query.stats
    for text in refusals:
        assert "PermissionError" in text
        # The reason stays in the data owner's log: its row count is not revealed.
        assert "150" not in text and "details in the data owner's log" in text
    truth = _analytics_truth([1])
    assert o.summary["data_owners"] == 1
    assert o.summary["count"] == len(truth["age"]) == 300
    assert o.state["stats"]["mean.age"] == pytest.approx(truth["age"].mean())


# -- custom_messages --------------------------------------------------------------
def test_custom_metadata_is_decoded_by_the_strategy(
    outcomes: dict[str, Outcome],
) -> None:
    o = outcomes["custom_messages"]
    meta_mod = example_module("custom_messages", "metadata")
    records = o.state["train_metadata"]
    assert len(records) == 3 * 2  # rounds x data owners
    assert o.summary["metadata_decoded"] == 6
    for raw in records.values():
        assert isinstance(raw, bytes)
        json.loads(raw)  # JSON on the wire, not pickle
        meta = meta_mod.TrainProcessMetadata.from_bytes(raw)
        assert isinstance(meta.converged, bool)
        assert meta.training_time >= 0.0
        assert list(meta.training_losses) == ["epoch_1", "epoch_2"]  # local-epochs=2
        assert all(0.0 < v < 1.0 for v in meta.training_losses.values())
    assert o.summary["converged_replies"] == sum(
        meta_mod.TrainProcessMetadata.from_bytes(r).converged for r in records.values()
    )
    acc = example_module("custom_messages", "task").accuracy(
        o.final_weights(), *example_module("custom_messages", "task").central_test_set()
    )
    assert acc >= 0.88


def test_custom_message_type_train_custom(outcomes: dict[str, Outcome]) -> None:
    o = outcomes["custom_messages"]
    meta_mod = example_module("custom_messages", "metadata")
    assert o.summary["personalized_nodes"] == 2
    assert o.summary["personal_acc_mean"] >= 0.9
    personal = o.state["personalization"]
    assert len(personal) == 2
    for raw in personal.values():
        meta = meta_mod.TrainProcessMetadata.from_bytes(raw)
        assert len(meta.training_losses) == 3  # finetune-epochs
    # 3 x (train + evaluate) + 1 train.custom per data owner
    assert [h.handled for h in o.run.handlers] == [7, 7]


def test_metadata_decoding_refuses_pickle_and_wrong_types() -> None:
    meta_mod = example_module("custom_messages", "metadata")
    cls = meta_mod.TrainProcessMetadata
    good = cls(1.5, True, {"epoch_1": 0.5})
    assert cls.from_bytes(good.to_bytes()) == good
    with pytest.raises(ValueError):
        cls.from_bytes(pickle.dumps(good))
    bad = [
        {"training_time": "1", "converged": True, "training_losses": {}},
        {"training_time": 1.0, "converged": 1, "training_losses": {}},
        {"training_time": 1.0, "converged": True, "training_losses": {"e": "x"}},
        {"training_time": 1.0, "converged": True, "training_losses": {}, "x": 1},
    ]
    for obj in bad:
        with pytest.raises(ValueError):
            cls.from_bytes(json.dumps(obj).encode())


# -- dp_fedmed --------------------------------------------------------------------
def test_dp_fedmed_fit_metric_types_are_exact(outcomes: dict[str, Outcome]) -> None:
    o = outcomes["dp_fedmed"]
    assert dict(o.state["fit_metric_types"]) == {
        "loss": "float",
        "epsilon": "float",
        "delta": "float",
        "sample_rate": "float",
        "steps": "int",
        "types_ok": "int",
    }
    # Every data owner saw every config value with exactly the type sent
    # (int not float, bool not int, bytes not str), in each of the 3 rounds.
    assert list(o.state["privacy"]["types_ok"]) == [1] * 6
    assert list(o.state["schema_problems"]["problems"]) == [""]
    assert o.summary["types_ok"] is True


def test_dp_fedmed_privacy_accounting(outcomes: dict[str, Outcome]) -> None:
    o = outcomes["dp_fedmed"]
    task = example_module("dp_fedmed", "task")
    p = o.state["privacy"]
    rounds = list(p["round_sample_epsilon"])
    assert len(rounds) == 3
    assert all(r > 0 for r in rounds)
    assert list(p["cumulative_sample_epsilon"]) == pytest.approx(
        np.cumsum(rounds).tolist()
    )
    assert o.summary["cumulative_sample_epsilon"] == pytest.approx(
        sum(rounds), abs=1e-6
    )
    user = task.gaussian_epsilon(0.5, 1e-5)
    assert list(p["cumulative_user_epsilon"]) == pytest.approx(
        [user, 2 * user, 3 * user]
    )
    assert list(p["dice"])[-1] >= 0.85
    assert o.summary["dice"] == pytest.approx(list(p["dice"])[-1], abs=1e-4)
    # Each data owner resumed from its own checkpoint in rounds 2 and 3, so its
    # step counter covers all three rounds.
    checkpoints = sorted(o.output_dir.glob("node_*/checkpoints/last.json"))
    assert len(checkpoints) == 2
    steps = sorted(json.loads(c.read_text())["steps_total"] for c in checkpoints)
    sizes = sorted(len(task.load_partition(i, 2).y_train) for i in range(2))
    assert steps == [3 * 2 * math.ceil(n / 32) for n in sizes]
    assert json.loads((o.output_dir / "privacy.json").read_text())[
        "round_sample_epsilon"
    ] == pytest.approx(rounds)


def test_dp_fedmed_round_epsilon_is_mean_of_data_owners(
    outcomes: dict[str, Outcome],
) -> None:
    o = outcomes["dp_fedmed"]
    task = example_module("dp_fedmed", "task")
    eps = []
    for i in range(2):
        n = len(task.load_partition(i, 2).y_train)
        eps.append(task.sample_epsilon(32 / n, 2 * math.ceil(n / 32), 1.0, 1e-5))
    assert list(o.state["privacy"]["round_sample_epsilon"]) == pytest.approx(
        [float(np.mean(eps))] * 3
    )


def test_dp_fedmed_schema_checker_is_exact() -> None:
    schema = example_module("dp_fedmed", "schema")
    good = {
        "noise_multiplier": 1.0,
        "server_round": 2,
        "local_epochs": 2,
        "resume_from_checkpoint": True,
        "run_nonce": b"\x00\x01",
        "checkpoint_path": "checkpoints/last.json",
    }
    assert schema.schema_errors(good, schema.fit_config_schema(good)) == []
    for key, wrong in [
        ("noise_multiplier", 1),  # int is not float
        ("server_round", 2.0),  # float is not int
        ("server_round", True),  # bool is not int
        ("resume_from_checkpoint", 1),  # int is not bool
        ("run_nonce", "AAE="),  # str is not bytes
    ]:
        bad = {**good, key: wrong}
        assert schema.schema_errors(bad, schema.fit_config_schema(good)), key
    no_resume = {**good, "resume_from_checkpoint": False}
    assert schema.schema_errors(no_resume, schema.fit_config_schema(no_resume)) == [
        "unexpected 'checkpoint_path'"
    ]
