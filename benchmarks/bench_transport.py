"""Transport benchmark: round-trip latency and bulk throughput of SyftGrid.

Run ``python benchmarks/bench_transport.py`` (full) or ``--quick`` (CI smoke).
Prints markdown tables:

* round-trip latency (median, p95) of small messages, researcher -> 1 data owner,
  over the in-memory hub and over SyftBox local folders watched with watchdog,
  encryption off and on; beside it the bare in-process cost of one round trip
  (``flower_message_to_bytes`` + ``bytes_to_flower_message`` of request and reply);
* throughput (seconds, MB/s) of 1, 10 and 100 MB messages (an ArrayRecord of
  float32) over SyftBox local folders, encryption off and on; beside it the bare
  serialize + parse cost of the same message (the limit) and the peak RSS.

Every case runs in its own subprocess so peak RSS (``resource.getrusage``) belongs
to that case alone. The data owner runs in the same process as the researcher (a
thread), as in the test-suite: these numbers are local I/O + codec cost, not sync
latency (a real SyftBox hop adds 1-5 s).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

APP = "bench/transport"
DS = "researcher@example.org"
DO = "owner@example.org"
MB = 1_000_000


# -- the measured system ---------------------------------------------------------------


def _settings(encrypted: bool) -> Any:
    from syft_flwr.config import Settings

    return Settings(encryption_enabled=encrypted)


def _make_clients(transport: str, root: Path) -> tuple[Any, Any]:
    if transport == "memory":
        from syft_flwr.client import MemoryClient
        from syft_flwr.transports.memory import MemoryHub

        hub = MemoryHub()
        return MemoryClient(DS, hub), MemoryClient(DO, hub)
    from syft_core import Client
    from syft_core.config import SyftClientConfig

    from syft_flwr.client import SyftCoreClient

    def make(email: str) -> SyftCoreClient:
        cfg = SyftClientConfig(
            path=root / f"{email}.json",
            data_dir=root / "SyftBox",
            email=email,
            server_url="http://127.0.0.1:9",
        )
        cfg.save()
        return SyftCoreClient(Client(cfg))

    return make(DS), make(DO)


def _owner_handler(body: bytes) -> bytes:
    """What a ClientApp minimally does: decode, reply with a small record."""
    from flwr.app import Message, MetricRecord, RecordDict

    from syft_flwr.serde import bytes_to_flower_message, flower_message_to_bytes

    msg = bytes_to_flower_message(body)
    size = sum(
        arr.numpy().nbytes
        for rec in msg.content.array_records.values()
        for arr in rec.values()
    )
    reply = Message(RecordDict({"ack": MetricRecord({"bytes": size})}), reply_to=msg)
    return flower_message_to_bytes(reply)


class _Setup:
    """A researcher grid and one serving data owner (events loop in a thread)."""

    def __init__(self, transport: str, encrypted: bool) -> None:
        from syft_flwr.events import create_events_watcher
        from syft_flwr.researcher.grid import SyftGrid

        self._tmp = tempfile.TemporaryDirectory(prefix="bench_transport_")
        root = Path(self._tmp.name)
        settings = _settings(encrypted)
        self.ds, self.do = _make_clients(transport, root)
        self.events = create_events_watcher(APP, self.do, settings=settings)
        self.events.on_request("messages", _owner_handler)
        self.thread = threading.Thread(target=self.events.run_forever, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.events.is_running and time.monotonic() < deadline:
            time.sleep(0.005)
        self.grid = SyftGrid(APP, [DO], self.ds, settings=settings)
        self.grid.set_run(1)
        self.node = self.grid.get_node_ids()[0]

    def message(self, content: Any) -> Any:
        return self.grid.create_message(content, "train", self.node, "bench")

    def round_trip(self, content: Any) -> Any:
        replies = self.grid.send_and_receive([self.message(content)], timeout=600)
        if len(replies) != 1 or replies[0].has_error():
            raise RuntimeError(f"bad reply: {replies}")
        return replies[0]

    def close(self) -> None:
        self.events.stop()
        self.thread.join(10)
        self.grid.close()
        self.grid.transport.close()
        self.events.transport.close()  # type: ignore[attr-defined]
        self._tmp.cleanup()


def _bare_round_trip_s(setup: _Setup, content: Any) -> float:
    """Serialize + parse of the request and of the reply, nothing else."""
    from flwr.app import Message, MetricRecord, RecordDict

    from syft_flwr._flwr_compat import set_message_id
    from syft_flwr.serde import bytes_to_flower_message, flower_message_to_bytes

    msg = setup.message(content)
    set_message_id(msg, "bench")
    t0 = time.perf_counter()
    req = bytes_to_flower_message(flower_message_to_bytes(msg))
    reply = Message(RecordDict({"ack": MetricRecord({"bytes": 0})}), reply_to=req)
    bytes_to_flower_message(flower_message_to_bytes(reply))
    return time.perf_counter() - t0


def _bare_one_way_s(setup: _Setup, content: Any) -> float:
    from syft_flwr._flwr_compat import set_message_id
    from syft_flwr.serde import bytes_to_flower_message, flower_message_to_bytes

    msg = setup.message(content)
    set_message_id(msg, "bench")
    t0 = time.perf_counter()
    bytes_to_flower_message(flower_message_to_bytes(msg))
    return time.perf_counter() - t0


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def _quiet() -> None:
    logging.getLogger("syft_flwr").setLevel(logging.ERROR)
    logging.getLogger("flwr").setLevel(logging.ERROR)


def worker_latency(transport: str, encrypted: bool, rounds: int) -> dict[str, Any]:
    from flwr.app import ConfigRecord, RecordDict

    _quiet()
    setup = _Setup(transport, encrypted)
    try:

        def content(i: int) -> Any:
            return RecordDict({"config": ConfigRecord({"round": i, "lr": 0.01})})

        for i in range(5):  # warm-up: keys, folders, watches, caches
            setup.round_trip(content(i))
        times = []
        for i in range(rounds):
            t0 = time.perf_counter()
            setup.round_trip(content(i))
            times.append(time.perf_counter() - t0)
        bare = [_bare_round_trip_s(setup, content(i)) for i in range(rounds)]
    finally:
        setup.close()
    times.sort()
    return {
        "n": rounds,
        "median_ms": statistics.median(times) * 1e3,
        "p95_ms": times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))] * 1e3,
        "bare_ms": statistics.median(bare) * 1e3,
        "rss_mb": _peak_rss_mb(),
    }


def worker_throughput(size_mb: float, encrypted: bool, reps: int) -> dict[str, Any]:
    import numpy as np
    from flwr.app import ArrayRecord, ConfigRecord, RecordDict

    _quiet()
    setup = _Setup("syftbox", encrypted)
    try:
        setup.round_trip(RecordDict({"config": ConfigRecord({"warm": 1})}))
        n = int(size_mb * MB) // 4
        weights = np.random.default_rng(0).standard_normal(n).astype(np.float32)
        content = RecordDict({"arrays": ArrayRecord([weights])})
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            reply = setup.round_trip(content)
            times.append(time.perf_counter() - t0)
            got = reply.content.metric_records["ack"]["bytes"]
            if got != weights.nbytes:
                raise RuntimeError(f"owner saw {got} bytes, sent {weights.nbytes}")
        bare = [_bare_one_way_s(setup, content) for _ in range(reps)]
    finally:
        setup.close()
    seconds = statistics.median(times)
    bare_s = statistics.median(bare)
    return {
        "size_mb": size_mb,
        "reps": reps,
        "seconds": seconds,
        "mb_s": size_mb / seconds,
        "bare_s": bare_s,
        "bare_mb_s": size_mb / bare_s,
        "rss_mb": _peak_rss_mb(),
    }


# -- driver ---------------------------------------------------------------------------------


def _run_worker(kind: str, **kwargs: Any) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", json.dumps({"kind": kind, **kwargs})]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYFT_FLWR_")}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {kind} {kwargs} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _fmt(x: float, digits: int = 2) -> str:
    return f"{x:.{digits}f}"


def run(
    quick: bool, sizes: list[float], rounds: int, out: Callable[[str], None]
) -> None:
    import flwr

    out("# syft_flwr transport benchmark" + (" (quick)" if quick else ""))
    out("")
    out(
        f"Python {platform.python_version()}, flwr {flwr.__version__}, "
        f"{os.cpu_count()} CPUs, {platform.system()} {platform.machine()}; "
        "researcher and data owner in one process, one shared data dir."
    )
    out("")
    out(
        f"## Round-trip latency, small message, researcher -> 1 data owner ({rounds} trips)"
    )
    out("")
    out(
        "| transport | encryption | median (ms) | p95 (ms) | bare serde per round trip (ms) |"
    )
    out("|---|---|---:|---:|---:|")
    for transport, label in (
        ("memory", "memory"),
        ("syftbox", "syftbox (folders + watchdog)"),
    ):
        for enc in (False, True):
            r = _run_worker(
                "latency", transport=transport, encrypted=enc, rounds=rounds
            )
            out(
                f"| {label} | {'on' if enc else 'off'} | {_fmt(r['median_ms'])} | "
                f"{_fmt(r['p95_ms'])} | {_fmt(r['bare_ms'], 3)} |"
            )
    out("")
    out("## Throughput over SyftBox local folders (ArrayRecord of float32, one way)")
    out("")
    out(
        "| size (MB) | plaintext (s) | plaintext (MB/s) | encrypted (s) | encrypted (MB/s) "
        "| bare serde (s) | bare serde (MB/s) | peak RSS plain (MB) | peak RSS enc (MB) |"
    )
    out("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for size in sizes:
        reps = 3 if size >= 100 else 5 if size >= 10 else 10
        if quick:
            reps = 1
        plain = _run_worker("throughput", size_mb=size, encrypted=False, reps=reps)
        enc = _run_worker("throughput", size_mb=size, encrypted=True, reps=reps)
        bare_s = min(plain["bare_s"], enc["bare_s"])
        out(
            f"| {size:g} | {_fmt(plain['seconds'], 3)} | {_fmt(plain['mb_s'], 1)} | "
            f"{_fmt(enc['seconds'], 3)} | {_fmt(enc['mb_s'], 1)} | {_fmt(bare_s, 3)} | "
            f"{_fmt(size / bare_s, 1)} | {_fmt(plain['rss_mb'], 0)} | {_fmt(enc['rss_mb'], 0)} |"
        )
    out("")
    out(
        "Latency is send_and_receive wall time; throughput is one request of the given "
        "size (median of 3-10) and a small reply; 'bare serde' is "
        "flower_message_to_bytes + bytes_to_flower_message of the same message in "
        "process, the floor any transport has to pay."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts (CI smoke)")
    parser.add_argument(
        "--sizes", type=str, default=None, help="MB list, e.g. 1,10,100"
    )
    parser.add_argument("--rounds", type=int, default=None, help="latency round trips")
    parser.add_argument("--worker", type=str, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        spec = json.loads(args.worker)
        kind = spec.pop("kind")
        fn = {"latency": worker_latency, "throughput": worker_throughput}[kind]
        print(json.dumps(fn(**spec)), flush=True)
        return 0
    sizes = (
        [float(s) for s in args.sizes.split(",")]
        if args.sizes
        else ([1.0, 10.0] if args.quick else [1.0, 10.0, 100.0])
    )
    rounds = args.rounds or (20 if args.quick else 100)
    run(args.quick, sizes, rounds, lambda line: print(line, flush=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
