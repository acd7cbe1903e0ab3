"""Delay from a ``SyftBoxTransport.put`` to its watch callback, many writes in a row.

Reproduces the half-second stalls of issue 29 without Flower: one transport
writes ``--writes`` small files into a folder another transport watches (two
observers, like two parties on one machine), and the delay from the end of
``put`` to the watcher's callback is recorded for each file. A stall is a
delay over 0.4 s: watchdog holding its event queue for the 0.5 s it waits for
the second half of a rename (see ``docs/syftbox.md``, "Why writes look like this").

Usage::

    .venv/bin/python benchmarks/bench_watch_stall.py [--writes 2000] [--src OTHER/src]
        [--switch-interval 1e-6]

On a quiet box the race is rare (a few in thousands); ``--switch-interval
1e-6`` lets the watcher's threads switch between the two halves of a rename
almost every time, which turns it from rare into common.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path


def run(writes: int) -> list[float]:
    from syft_flwr.transports.syftbox import SyftBoxTransport

    root = Path(tempfile.mkdtemp(prefix="stall_"))
    writer = SyftBoxTransport(root, "a@example.org")
    reader = SyftBoxTransport(root, "b@example.org")
    folder = "b@example.org/app_data/x/rpc/messages/a@example.org"
    seen: dict[str, float] = {}
    got = threading.Condition()

    def on_key(key: str) -> None:
        with got:
            seen.setdefault(key, time.monotonic())
            got.notify_all()

    reader.watch(folder, on_key)
    delays: list[float] = []
    try:
        for i in range(writes):
            key = f"{folder}/m{i}.request"
            writer.put(key, b"x" * 200)
            t_put = time.monotonic()
            with got:
                got.wait_for(lambda k=key: k in seen, timeout=5)
            delays.append(seen.get(key, t_put + 5) - t_put)
    finally:
        writer.close()
        reader.close()
    return delays


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--writes", type=int, default=2000)
    p.add_argument("--src", type=Path, default=None)
    p.add_argument(
        "--switch-interval",
        type=float,
        default=None,
        help="sys.setswitchinterval: 1e-6 makes thread switches (and the race) common",
    )
    args = p.parse_args(argv)
    if args.switch_interval is not None:
        sys.setswitchinterval(args.switch_interval)
    if args.src is not None:
        sys.path.insert(0, str(args.src))
    d = sorted(run(args.writes))
    slow = sum(1 for x in d if x > 0.4)
    print(
        f"writes {len(d)}  median {statistics.median(d) * 1000:.2f} ms  "
        f"p99 {d[int(len(d) * 0.99) - 1] * 1000:.2f} ms  max {d[-1] * 1000:.1f} ms  "
        f"over 0.4 s: {slow}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
