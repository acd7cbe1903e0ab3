"""Drive API requests per data owner per round, and what one Drive quota carries.

Run ``python benchmarks/bench_gdrive_requests.py`` (``--quick`` for a CI smoke).

A researcher and ``--data-owners`` data owners run the toy FL app over the
loopback Drive-compatible server (the real google-api-python-client, encryption
on) twice: with ``--rounds`` rounds and with one round. The difference, divided
by the extra rounds and the number of data owners, is the steady-state cost of a
round: set-up (folders, sharing, keys) and the stop signal cancel out. Requests
are counted per Drive user by the server, so the researcher's and the data
owners' sides are reported separately.

Idle cost is measured too: every party keeps its ``changes.list`` poller running
for ``--idle`` seconds with nothing happening (``--poll-interval`` is the idle
polling ceiling, ``SYFT_FLWR_POLL_INTERVAL``). From both, the largest number of
data owners one researcher account carries at one round per minute under
Drive's 12,000 requests per minute per user is::

    N = (12000 - researcher idle requests per minute) / researcher requests per DO per round

Each data owner has its own account and quota; its requests per round at one
round per minute are at most its per-round count plus a minute of idle polls.
No timing is asserted anywhere; these are counts.

``--model-size`` sets the toy model's float32 values (default 1000: inline in
the requests). From 262,144 values (1 MiB) on, the model is an attachment that
the researcher broadcasts through one shared Drive folder per round
(``files.create`` + one ``permissions.create`` per data owner + one upload per
chunk); ``--copies`` turns shared folders off, so each request carries its own
copy (the behaviour before Drive could share), for comparison.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
import logging
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TOY = ROOT / "tests" / "assets" / "toy_app"
DS = "researcher@example.org"
QUOTA_PER_MIN = 12_000  # Drive requests per minute per user


def _client(server: Any, email: str, tmp: Path, peers: list[str], poll: float) -> Any:
    from syft_flwr.client import SyftP2PClient
    from syft_flwr.transports.gdrive import GDriveTransport

    state = tmp / email

    def factory() -> GDriveTransport:
        return GDriveTransport(
            email,
            lambda: server.service(email),
            allowed_peers=peers,
            poll_interval=poll,
            state_dir=state / "gdrive",
        )

    return SyftP2PClient(email, transport_factory=factory, state_root=state)


def run_job(
    n_owners: int, rounds: int, train_seconds: float, poll: float, model_size: int
) -> tuple[dict[str, int], dict[tuple[str, str], int]]:
    """Run one job; return requests per Drive user and per (user, method)."""
    from syft_flwr.config import Settings
    from syft_flwr.data_owner.runner import run_data_owner
    from syft_flwr.project import load_component, load_project
    from syft_flwr.researcher.runner import run_researcher
    from syft_flwr.testing.drive_server import FakeDriveServer

    cfg = load_project(TOY)
    server_app = load_component(cfg.serverapp, cfg.app_dir)
    client_app = load_component(cfg.clientapp, cfg.app_dir)
    settings = Settings(poll_interval=poll, encryption_enabled=True)
    owners = [f"do{i}@example.org" for i in range(n_owners)]
    rc = dict(
        cfg.app_config,
        **{
            "num-server-rounds": rounds,
            "min-nodes": n_owners,
            "model-size": model_size,
            "slow-seconds": train_seconds,
        },
    )
    with tempfile.TemporaryDirectory() as tmp, FakeDriveServer() as server:
        threads = []
        for i, email in enumerate(owners):

            def serve(email: str = email, i: int = i) -> None:
                run_data_owner(
                    client_app,
                    "flwr/toy",
                    client=_client(server, email, Path(tmp), [DS], poll),
                    aggregators=[DS],
                    run_config=rc,
                    node_config={"partition-id": i, "num-partitions": n_owners},
                    settings=settings,
                )

            th = threading.Thread(target=serve, daemon=True)
            th.start()
            threads.append(th)
        with contextlib.redirect_stdout(io.StringIO()):
            run_researcher(
                server_app,
                "flwr/toy",
                owners,
                client=_client(server, DS, Path(tmp), owners, poll),
                run_config=rc,
                settings=settings,
                stop_wait=15,
            )
        for th in threads:
            th.join(timeout=60)
        per_user: collections.Counter[str] = collections.Counter()
        per_method: collections.Counter[tuple[str, str]] = collections.Counter()
        for name, user, _status in server.request_log:
            per_user[user or "?"] += 1
            per_method[user or "?", name] += 1
    return dict(per_user), dict(per_method)


def idle_cost(n_owners: int, seconds: float, poll_interval: float) -> dict[str, float]:
    """Requests per minute of idle watchers (researcher, mean data owner)."""
    from syft_flwr.testing.drive_server import FakeDriveServer
    from syft_flwr.transports.gdrive import GDriveTransport

    owners = [f"do{i}@example.org" for i in range(n_owners)]
    with tempfile.TemporaryDirectory() as tmp, FakeDriveServer() as server:
        made = []

        def make(email: str, peers: list[str]) -> GDriveTransport:
            t = GDriveTransport(
                email,
                lambda: server.service(email),
                allowed_peers=peers,
                poll_interval=poll_interval,
                state_dir=Path(tmp) / email,
            )
            made.append(t)
            return t

        ds = make(DS, owners)
        dos = [make(o, [DS]) for o in owners]
        ds.prepare("flwr/toy", "messages", owners)
        for t in dos:
            t.prepare("flwr/toy", "messages", [DS])
        ds.watch(f"{DS}/app_data", lambda _k: None)
        for t, o in zip(dos, owners, strict=True):
            t.watch(f"{o}/app_data", lambda _k: None)
        time.sleep(3 * poll_interval)  # past the fast polls after the set-up
        server.reset_counters()
        time.sleep(seconds)
        per_user: collections.Counter[str] = collections.Counter()
        for _name, user, _status in server.request_log:
            per_user[user or "?"] += 1
        for t in made:
            t.close()
    scale = 60.0 / seconds
    return {
        "researcher": per_user[DS] * scale,
        "data owner": sum(per_user[o] for o in owners) / n_owners * scale,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-owners", type=int, default=3)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--idle", type=float, default=10.0, help="seconds idle")
    p.add_argument(
        "--poll-interval", type=float, default=2.0, help="idle polling ceiling (s)"
    )
    p.add_argument(
        "--train-seconds", type=float, default=3.0, help="local training time"
    )
    p.add_argument("--breakdown", action="store_true", help="requests per method")
    p.add_argument(
        "--model-size", type=int, default=1000, help="float32 values in the model"
    )
    p.add_argument(
        "--copies",
        action="store_true",
        help="no shared Drive folders: one model copy per request",
    )
    p.add_argument(
        "--idle-only", action="store_true", help="only measure the idle cost"
    )
    p.add_argument("--quick", action="store_true", help="2 data owners, 2 rounds")
    args = p.parse_args(argv)
    if args.quick:
        args.data_owners, args.rounds, args.idle = 2, 2, 4.0
        args.train_seconds = 0.5
    logging.basicConfig(level=logging.ERROR)
    n, r = args.data_owners, args.rounds
    if args.idle_only:
        idle = idle_cost(n, args.idle, args.poll_interval)
        print(
            f"Idle polling, {n} data owners, {args.idle:g} s (ceiling "
            f"{args.poll_interval:g} s): researcher {idle['researcher']:.0f} "
            f"requests/min, data owner {idle['data owner']:.0f} requests/min"
        )
        return
    poll = args.poll_interval
    if args.copies:
        from syft_flwr.transports.gdrive import GDriveTransport

        GDriveTransport.can_share = False  # type: ignore[misc]
    size = args.model_size
    (short, short_m) = run_job(n, 1, args.train_seconds, poll, size)
    (full, full_m) = run_job(n, r, args.train_seconds, poll, size)
    owners = [f"do{i}@example.org" for i in range(n)]

    def side(counts: dict[str, int]) -> tuple[int, float]:
        return counts.get(DS, 0), sum(counts.get(o, 0) for o in owners) / n

    ds1, do1 = side(short)
    dsr, dor = side(full)
    extra = max(r - 1, 1)
    ds_per = (dsr - ds1) / extra / n
    do_per = (dor - do1) / extra
    idle = idle_cost(n, args.idle, args.poll_interval)
    carried = int((QUOTA_PER_MIN - idle["researcher"]) // max(ds_per, 1e-9))
    print(
        f"Drive requests, {n} data owners, encryption on, {args.train_seconds:g} s "
        f"training, polling ceiling {poll:g} s, model {4 * size:,} bytes"
        f"{' (one copy per request)' if args.copies else ''} (loopback server)\n"
    )
    print(
        "| side | whole job, 1 round | whole job, "
        f"{r} rounds | per data owner per round |"
    )
    print("|---|---:|---:|---:|")
    print(f"| researcher | {ds1} | {dsr} | {ds_per:.1f} |")
    print(f"| data owner (mean) | {do1:.0f} | {dor:.0f} | {do_per:.1f} |")
    print(
        f"\nIdle polling (ceiling {args.poll_interval:g} s): researcher "
        f"{idle['researcher']:.0f} requests/min, data owner "
        f"{idle['data owner']:.0f} requests/min"
    )
    print(
        f"Data owners one researcher quota ({QUOTA_PER_MIN} requests/min/user) "
        f"carries at one round per minute: {carried}"
    )
    # Upper bound: the round's own requests plus a whole idle minute of polls.
    print(
        "At one round per minute, each data owner makes at most "
        f"{do_per + idle['data owner']:.0f} requests per round (its own quota)"
    )
    if args.breakdown:
        print("\n| user | method | extra requests per extra round |")
        print("|---|---|---:|")
        for (user, name), count in sorted(full_m.items()):
            delta = (count - short_m.get((user, name), 0)) / extra
            if delta:
                print(f"| {user} | {name} | {delta:.1f} |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
