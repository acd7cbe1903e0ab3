"""Large-model benchmark (issue 10): FedAvg over one big float32 array.

Run ``python benchmarks/bench_large_model.py`` (full: 95 MB, N = 2 and 8, 3
rounds) or ``--quick`` (CI smoke: 2 MB, N = 2, 1 round). Prints one markdown
table with, for each N and engine:

* **s/round**: wall time of a steady round, measured inside the ServerApp
  (``benchmarks/large_model_app``): FedAvg's ``evaluate_fn`` runs before round 1
  and after every round, so consecutive calls bracket one round (one broadcast
  of the model to N nodes and N model-sized replies; federated evaluation is
  off). "Steady" is the median of rounds 2..R; with one round (``--quick``) it
  is round 1, which includes start-up.
* **researcher peak RSS**: ``ru_maxrss`` of the process that runs the ServerApp,
  read at its end. For Flower's in-process engine that process also runs every
  ClientApp, so its figure is an upper bound for the server side.
* **researcher writes/round**: growth of ``wchar`` in ``/proc/self/io`` of the
  researcher process over a steady round: every byte it passed to ``write()``
  (request files and chunks in the data owners' folders, plus its own small log
  and state files). Linux only; "n/a" elsewhere.
* **Flower's simulation engine** as the reference, same app, same run: Flower's
  real engine (``_run_simulation``: vce workers, ``InMemoryGrid`` over an
  in-memory LinkState) with the Ray backend swapped for one that calls the
  ClientApp in the worker thread, as ``tests/examples/test_flower_equivalence.py``
  does (Ray would add ~8 s of actor start-up and is not installed by default).
  If it cannot run, the row says why.
* **serde limit**: ``flower_message_to_bytes`` + ``bytes_to_flower_message`` of
  the same train message (the model in an ArrayRecord), in process: the cost of
  turning one request into bytes and back, which any file transport pays.

syft_flwr rows use :func:`syft_flwr.simulation.simulate`: the researcher and
each data owner are separate OS processes over local SyftBox-layout folders
(watchdog events, envelopes, encryption as configured). Every engine runs in its
own process so the RSS figures do not mix.

This benchmark imports Flower internals (``_run_simulation``, the vce Backend)
for the reference row only; the library itself does not.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
APP_DIR = HERE / "large_model_app"
MB = 1_000_000
TAG = "BENCH_TIMINGS "


def _run_config(n: int, size: int, rounds: int) -> dict[str, Any]:
    return {"num-server-rounds": rounds, "model-size": size, "min-nodes": n}


def _steady(values: list[float]) -> float:
    """Median of rounds 2..R (round 1 carries start-up); round 1 if alone."""
    return statistics.median(values[1:] if len(values) > 1 else values)


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    writes: list[int] = report["round_write_bytes"]
    return {
        "rounds": len(report["round_seconds"]),
        "round_s": _steady(report["round_seconds"]),
        "round1_s": report["round_seconds"][0],
        "peak_rss_mb": report["peak_rss_mb"],
        "write_mb": _steady(writes) / MB if writes and min(writes) >= 0 else None,
    }


def _parse(text: str) -> dict[str, Any]:
    lines = [x for x in text.splitlines() if x.startswith(TAG)]
    if not lines:
        raise RuntimeError(f"no {TAG.strip()} line in:\n{text[-3000:]}")
    return json.loads(lines[-1][len(TAG) :])


# -- workers (each in its own process) ---------------------------------------------


def worker_syft(n: int, size: int, rounds: int, encrypted: bool) -> dict[str, Any]:
    from syft_flwr.simulation import simulate

    rc = " ".join(f"{k}={v}" for k, v in _run_config(n, size, rounds).items())
    with tempfile.TemporaryDirectory(prefix="bench_large_") as tmp:
        res = simulate(
            APP_DIR,
            n,
            run_config=rc,
            workdir=tmp,
            encryption=encrypted,
            quiet=True,
            timeout=3600,
        )
        log = res.log(res.researcher.email)
        if not res.ok:
            raise RuntimeError(f"simulation failed:\n{log[-3000:]}")
        return _summary(_parse(log))


def _load_app() -> tuple[Any, Any]:
    """The ServerApp and ClientApp objects of ``large_model_app`` (no syft_flwr needed)."""
    import importlib
    import tomllib

    comps = tomllib.loads((APP_DIR / "pyproject.toml").read_text())["tool"]["flwr"][
        "app"
    ]["components"]
    sys.path.insert(0, str(APP_DIR))
    out = []
    for ref in (comps["serverapp"], comps["clientapp"]):
        module, _, attr = ref.partition(":")
        out.append(getattr(importlib.import_module(module), attr))
    return out[0], out[1]


def worker_flower(n: int, size: int, rounds: int, ray: bool = False) -> dict[str, Any]:
    """The same app on Flower's Simulation Engine: in process, or with its Ray backend.

    ``ray=False`` replaces the Ray backend by one that calls the ClientApp in
    the engine's worker thread (a strict lower bound: no Ray, no copies between
    processes); ``ray=True`` is the engine as ``flwr run`` and
    ``run_simulation`` use it (needs ``ray`` installed, e.g. ``flwr[simulation]``).
    """
    import sys as _sys
    import types

    from flwr.app import Context, Message, RecordDict
    from flwr.common.config import get_fused_config_from_dir
    from flwr.common.constant import SUPERLINK_NODE_ID
    from flwr.server.superlink.fleet.vce.backend import Backend, BackendConfig
    from flwr.simulation.run_simulation import _run_simulation
    from flwr.supercore import telemetry
    from flwr.supercore.constant import NOOP_FEDERATION_ID
    from flwr.supercore.run import Run
    from flwr.supercore.task_identity import TaskIdentity
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

    server_app, client_app = _load_app()
    run_id = 4242
    run = Run.create_empty(run_id=run_id)
    run.primary_task_id = 1
    run.federation_id = NOOP_FEDERATION_ID
    server_ctx = Context(
        run_id=run_id,
        node_id=0,
        node_config={},
        state=RecordDict(),
        run_config=get_fused_config_from_dir(APP_DIR, _run_config(n, size, rounds)),
    )
    TaskIdentity.task_id = 1
    TaskIdentity.run_id = run_id
    TaskIdentity.node_id = SUPERLINK_NODE_ID
    if not ray:
        # _run_simulation builds its workers from RayBackend by name: a stub
        # module in its place makes the engine call the ClientApp in process.
        stub = types.ModuleType("flwr.server.superlink.fleet.vce.backend.raybackend")
        stub.RayBackend = InProcessBackend  # type: ignore[attr-defined]
        _sys.modules[stub.__name__] = stub
    telemetry.FLWR_TELEMETRY_ENABLED = "0"  # type: ignore[attr-defined]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        _run_simulation(
            num_supernodes=n,
            exit_event=EventType.PYTHON_API_RUN_SIMULATION_LEAVE,
            client_app=client_app,
            server_app=server_app,
            backend_name="ray" if ray else "in-process",
            app_dir=str(APP_DIR),
            is_app=True,
            run=run,
            server_app_context=server_ctx,
        )
    summary = _summary(_parse(buf.getvalue()))
    summary["write_mb"] = None  # in memory: nothing written to files
    return summary


def worker_serde(size: int, reps: int) -> dict[str, Any]:
    import numpy as np
    from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict

    from syft_flwr._flwr_compat import set_message_id, set_task_identity
    from syft_flwr.serde import bytes_to_flower_message, flower_message_to_bytes

    content = RecordDict(
        {
            "arrays": ArrayRecord([np.zeros(size, dtype=np.float32)]),
            "config": ConfigRecord({"server-round": 1}),
        }
    )
    set_task_identity(1)  # flwr 1.42 instruction Messages read it
    msg = Message(content, dst_node_id=1, message_type="train", group_id="1")
    set_message_id(msg, "bench")
    ser, de = [], []
    for _ in range(reps):
        t0 = time.perf_counter()
        body = flower_message_to_bytes(msg)
        t1 = time.perf_counter()
        bytes_to_flower_message(body)
        t2 = time.perf_counter()
        del body
        ser.append(t1 - t0)
        de.append(t2 - t1)
    return {"ser_s": statistics.median(ser), "de_s": statistics.median(de)}


# -- driver -------------------------------------------------------------------------


def _clean_env() -> dict[str, str]:
    # The parties must see the benchmark's settings, not the caller's.
    return {k: v for k, v in os.environ.items() if not k.startswith("SYFT_FLWR_")}


def _run_worker(kind: str, python: str | None = None, **kwargs: Any) -> dict[str, Any]:
    spec = json.dumps({"kind": kind, **kwargs})
    cmd = [python or sys.executable, __file__, "--worker", spec]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env=_clean_env(), timeout=3600
    )
    if proc.returncode != 0:
        raise RuntimeError(f"worker {kind} {kwargs} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _f(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def run(
    sizes_n: list[int],
    size: int,
    rounds: int,
    quick: bool,
    skip_flower: bool,
    out: Callable[[str], None],
    ray_python: str | None = None,
) -> None:
    import flwr

    model_mb = size * 4 / MB
    out("# syft_flwr large-model benchmark" + (" (quick)" if quick else ""))
    out("")
    out(
        f"Python {platform.python_version()}, flwr {flwr.__version__}, "
        f"{os.cpu_count()} CPUs, {platform.system()} {platform.machine()}; "
        f"model: one float32 array of {size:,} values ({model_mb:.1f} MB), "
        f"FedAvg train-only, {rounds} round(s)."
    )
    out("")
    serde = _run_worker("serde", size=size, reps=1 if quick else 3)
    limit_s = serde["ser_s"] + serde["de_s"]
    out(
        "| N | engine | encryption | s/round | x Flower (no Ray) | x Flower (Ray) "
        "| round 1 (s) | researcher peak RSS (MB) | researcher writes/round (MB) "
        "| writes / model |"
    )
    out("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|")

    def reference(ray: bool) -> tuple[dict[str, Any] | None, str]:
        if skip_flower:
            return None, "skipped (--skip-flower)"
        if ray and ray_python is None:
            return None, "skipped (no Python with ray: --ray-python)"
        try:
            got = _run_worker(
                "flower",
                ray_python if ray else None,
                n=n,
                size=size,
                rounds=rounds,
                ray=ray,
            )
            return got, ""
        except Exception as exc:  # the reference must never vanish silently
            last = str(exc).strip().splitlines()[-1][:120]
            return None, "could not run: " + last.replace("|", "/")

    for n in sizes_n:
        flower, why = reference(ray=False)
        flower_ray, why_ray = reference(ray=True)
        for enc in (False, True):
            r = _run_worker("syft", n=n, size=size, rounds=rounds, encrypted=enc)
            ratio = r["round_s"] / flower["round_s"] if flower else None
            ratio_ray = r["round_s"] / flower_ray["round_s"] if flower_ray else None
            per_model = r["write_mb"] / model_mb if r["write_mb"] is not None else None
            out(
                f"| {n} | syft_flwr (processes, local folders) | "
                f"{'on' if enc else 'off'} | {_f(r['round_s'])} | {_f(ratio, 1)} | "
                f"{_f(ratio_ray, 1)} | {_f(r['round1_s'])} | "
                f"{_f(r['peak_rss_mb'], 0)} | {_f(r['write_mb'], 1)} | "
                f"{_f(per_model, 2)} |"
            )
        for label, ref, reason in (
            ("in process, no Ray", flower, why),
            ("Ray backend", flower_ray, why_ray),
        ):
            if ref is None:
                empty = " |" * 6
                out(
                    f"| {n} | Flower simulation engine ({label}) | - | {reason} |{empty}"
                )
            else:
                out(
                    f"| {n} | Flower simulation engine ({label}) | - | "
                    f"{_f(ref['round_s'])} | 1.0 | 1.0 | {_f(ref['round1_s'])} | "
                    f"{_f(ref['peak_rss_mb'], 0)} | n/a | n/a |"
                )
    out("")
    out(
        f"Serde limit, one train message ({model_mb:.1f} MB) in process: "
        f"serialize {_f(serde['ser_s'], 4)} s + deserialize {_f(serde['de_s'], 4)} s "
        f"= {_f(limit_s, 4)} s"
    )
    out("")
    out(
        "s/round: median of rounds 2..R between FedAvg evaluate_fn marks in the "
        "ServerApp (round 1 alone when R = 1); RSS: ru_maxrss of the ServerApp's "
        "process (Flower's row includes its in-process ClientApps); writes: growth of "
        "wchar in /proc/self/io of the researcher over the same round."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="2 MB, N = 2, 1 round (CI smoke)"
    )
    parser.add_argument(
        "--model-mb", type=float, default=None, help="model size in MB (default 95)"
    )
    parser.add_argument(
        "--data-owners", type=str, default=None, help="N list (default 2,8)"
    )
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 3)")
    parser.add_argument(
        "--skip-flower",
        action="store_true",
        help="leave out Flower's simulation engine (the table says so)",
    )
    parser.add_argument(
        "--ray-python",
        type=str,
        default=None,
        help="a Python with flwr[simulation] (ray) installed, for Flower's engine "
        "with its Ray backend (default: this Python if it has ray, else that row "
        "says it was skipped)",
    )
    parser.add_argument("--worker", type=str, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.getLogger("flwr").setLevel(logging.ERROR)
    if args.worker:
        spec = json.loads(args.worker)
        kind = spec.pop("kind")
        fn = {"syft": worker_syft, "flower": worker_flower, "serde": worker_serde}
        print(json.dumps(fn[kind](**spec)), flush=True)
        return 0
    model_mb = args.model_mb or (2.0 if args.quick else 95.0)
    size = int(model_mb * MB) // 4
    ns = (
        [int(x) for x in args.data_owners.split(",")]
        if args.data_owners
        else ([2] if args.quick else [2, 8])
    )
    rounds = args.rounds or (1 if args.quick else 3)
    ray_python = args.ray_python
    if ray_python is None and importlib.util.find_spec("ray") is not None:
        ray_python = sys.executable
    run(
        ns,
        size,
        rounds,
        args.quick,
        args.skip_flower,
        lambda s: print(s, flush=True),
        ray_python=ray_python,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
