"""syft_flwr reaches the same final model as Flower's own in-process engines.

``flwr.simulation.run_simulation`` exists in flwr 1.41 without Ray, but its
Simulation Engine builds its ClientApp workers with ``RayBackend`` only. The
reference run therefore uses Flower's real engine (``InMemoryGrid`` over an
in-memory ``LinkState``, the vce worker loop, per-node Contexts with
``partition-id``/``num-partitions``, run config fused from ``pyproject.toml`` as
``flwr run`` does) with one substitution: a Backend that calls the ClientApp in
the worker thread instead of a Ray actor. A second reference is a minimal Grid
that calls the ClientApp directly for each message, as the vce worker does.

Both examples train deterministically (fixed data, seeded mini-batches), so the
final weights must agree to ``rtol=1e-6`` (in practice they agree bit for bit
with two data owners, whose weighted average does not depend on order).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import sys
import threading
import types
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.config import get_fused_config_from_dir
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.common.serde import message_from_proto, message_to_proto
from flwr.serverapp import Grid, ServerApp
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

from syft_flwr.project import load_component, load_project

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES_DIR = ROOT / "examples"
NUM_NODES = 2
RUN_ID = 4242

pytestmark = pytest.mark.timeout(120)


def _apps(example: str) -> tuple[Path, ServerApp, ClientApp]:
    cfg = load_project(EXAMPLES_DIR / example)
    return (
        cfg.app_dir,
        load_component(cfg.serverapp, cfg.app_dir),
        load_component(cfg.clientapp, cfg.app_dir),
    )


def _weights(context: Context) -> list[np.ndarray]:
    return context.state["final_model"].to_numpy_ndarrays()


def _set_task_identity(run_id: int) -> None:
    TaskIdentity.task_id = 1
    TaskIdentity.run_id = run_id
    TaskIdentity.node_id = SUPERLINK_NODE_ID


# -- reference 1: Flower's Simulation Engine with an in-process backend ----------
def run_flower_simulation(example: str) -> Context:
    """Run ``example`` on Flower's Simulation Engine (vce + InMemoryGrid)."""
    from flwr.server.superlink.fleet.vce.backend import Backend, BackendConfig
    from flwr.simulation.run_simulation import _run_simulation
    from flwr.supercore import telemetry
    from flwr.supercore.constant import NOOP_FEDERATION_ID
    from flwr.supercore.telemetry import EventType

    class InProcessBackend(Backend):
        """Runs the ClientApp in the vce worker thread (one worker)."""

        def __init__(self, backend_config: BackendConfig) -> None:
            self._app_fn: Any = None

        def build(self, app_fn: Any) -> None:
            self._app_fn = app_fn

        @property
        def num_workers(self) -> int:
            return 1

        def is_worker_idle(self) -> bool:
            return True

        def terminate(self) -> None:
            pass

        def process_message(
            self, message: Message, context: Context
        ) -> tuple[Message, Context]:
            return self._app_fn()(message=message, context=context), context

    app_dir, server_app, client_app = _apps(example)
    run = Run.create_empty(run_id=RUN_ID)
    run.primary_task_id = 1
    run.federation_id = NOOP_FEDERATION_ID
    server_ctx = Context(
        run_id=RUN_ID,
        node_id=0,
        node_config={},
        state=RecordDict(),
        run_config=get_fused_config_from_dir(app_dir, {}),
    )
    _set_task_identity(RUN_ID)
    stub = types.ModuleType("flwr.server.superlink.fleet.vce.backend.raybackend")
    stub.RayBackend = InProcessBackend  # type: ignore[attr-defined]
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sys.modules, stub.__name__, stub)
        mp.setattr(telemetry, "FLWR_TELEMETRY_ENABLED", "0")
        result = _run_simulation(
            num_supernodes=NUM_NODES,
            exit_event=EventType.PYTHON_API_RUN_SIMULATION_LEAVE,
            client_app=client_app,
            server_app=server_app,
            backend_name="in-process",
            app_dir=str(app_dir),
            is_app=True,
            run=run,
            server_app_context=server_ctx,
        )
    return result.context


# -- reference 2: a minimal Grid that calls the ClientApp directly ----------------
class DirectGrid(Grid):
    """Delivers each message to the ClientApp in-process, like Flower's vce worker.

    Each message goes through the protobuf wire format (a copy, as a real
    transport makes), gets a message id, and is handled with its node's
    persistent Context; an exception becomes a ``CLIENT_APP_RAISED_EXCEPTION``
    error reply.
    """

    def __init__(self, client_app: ClientApp, run_config: dict[str, Any]) -> None:
        self.client_app = client_app
        self._run: Run | None = None
        self._contexts = {
            1000 + i: Context(
                run_id=RUN_ID,
                node_id=1000 + i,
                node_config={"partition-id": i, "num-partitions": NUM_NODES},
                state=RecordDict(),
                run_config=dict(run_config),
            )
            for i in range(NUM_NODES)
        }
        self._replies: dict[str, Message] = {}
        self._lock = threading.Lock()  # the legacy Server sends from a thread pool

    @property
    def run(self) -> Run:
        assert self._run is not None
        return self._run

    def set_run(self, run_id: int) -> None:
        self._run = Run.create_empty(run_id)

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return Message(
            content,
            dst_node_id=dst_node_id,
            message_type=message_type,
            ttl=ttl,
            group_id=group_id,
        )

    def get_node_ids(self) -> list[int]:
        return list(self._contexts)

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        ids = []
        for msg in messages:
            mid = str(uuid.uuid4())
            msg.metadata.__dict__["_message_id"] = mid
            copy = message_from_proto(message_to_proto(msg))
            with self._lock:
                try:
                    reply = self.client_app(
                        message=copy, context=self._contexts[copy.metadata.dst_node_id]
                    )
                except Exception as exc:
                    reply = Message(
                        Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, repr(exc)),
                        reply_to=copy,
                    )
                reply.metadata.__dict__["_message_id"] = str(uuid.uuid4())
                self._replies[mid] = message_from_proto(message_to_proto(reply))
            ids.append(mid)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> list[Message]:
        with self._lock:
            return [self._replies.pop(m) for m in message_ids if m in self._replies]

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> list[Message]:
        return self.pull_messages(self.push_messages(messages))


def run_direct_grid(example: str) -> Context:
    app_dir, server_app, client_app = _apps(example)
    run_config = get_fused_config_from_dir(app_dir, {})
    grid = DirectGrid(client_app, run_config)
    grid.set_run(RUN_ID)
    _set_task_identity(RUN_ID)
    ctx = Context(
        run_id=RUN_ID,
        node_id=SUPERLINK_NODE_ID,
        node_config={},
        state=RecordDict(),
        run_config=run_config,
    )
    server_app(grid=grid, context=ctx)
    return ctx


# -- syft_flwr ----------------------------------------------------------------------
def run_syft_flwr(example: str) -> Context:
    if str(EXAMPLES_DIR) not in sys.path:
        sys.path.insert(0, str(EXAMPLES_DIR))
    run_local = importlib.import_module("run_local")
    run = run_local.run_local(example)
    assert not run.errors
    assert not any(t.is_alive() for t in run.threads)
    return run.context


ENGINES = {
    "flower-simulation": run_flower_simulation,
    "direct-grid": run_direct_grid,
    "syft_flwr": run_syft_flwr,
}


@pytest.fixture(scope="module")
def finals() -> Iterator[dict[tuple[str, str], Context]]:
    """(example, engine) -> server Context, computed on first use."""
    cache: dict[tuple[str, str], Context] = {}

    class _Lazy(dict):  # type: ignore[type-arg]
        def __missing__(self, key: tuple[str, str]) -> Context:
            example, engine = key
            with contextlib.redirect_stdout(io.StringIO()):
                cache[key] = ENGINES[engine](example)
            self[key] = cache[key]
            return cache[key]

    yield _Lazy()


@pytest.mark.parametrize("example", ["fedavg_tabular", "legacy_numpy"])
@pytest.mark.parametrize("reference", ["flower-simulation", "direct-grid"])
def test_syft_flwr_matches_flower(
    finals: dict[tuple[str, str], Context], example: str, reference: str
) -> None:
    ours = _weights(finals[(example, "syft_flwr")])
    theirs = _weights(finals[(example, reference)])
    assert len(ours) == len(theirs) == 2
    for a, b in zip(ours, theirs, strict=True):
        assert a.dtype == b.dtype == np.float64
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=0)
    # The model moved away from its zero initialization.
    assert np.abs(ours[0]).max() > 0.1
    s_ours = finals[(example, "syft_flwr")].state["summary"]
    s_theirs = finals[(example, reference)].state["summary"]
    assert s_ours["accuracy"] == s_theirs["accuracy"]


def test_message_api_and_legacy_examples_agree(
    finals: dict[tuple[str, str], Context],
) -> None:
    """The two APIs implement the same training, so they end at the same model."""
    a = _weights(finals[("fedavg_tabular", "syft_flwr")])
    b = _weights(finals[("legacy_numpy", "syft_flwr")])
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=0)
