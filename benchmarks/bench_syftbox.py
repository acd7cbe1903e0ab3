"""Per-round time of a syft_flwr job over a real SyftBox 0.4.0 network vs local folders.

Runs the same Flower app (default ``examples/fedavg_tabular``: 3 data owners,
encryption on, ``python -m syft_flwr party`` processes, data owners started first)
twice:

* **local folders**: ``syft_flwr.simulation.simulate`` (one shared data dir, files
  appear instantly);
* **SyftBox network**: a loopback SyftBox 0.4.0 server and one sync client per party
  (``syft_flwr.testing.syftbox_network``); files move only through the server.

Per-round times come from the researcher log: a round lasts from Flower's
``[ROUND n/N]`` line to the next one (the last round ends at "Strategy execution
finished"). One FedAvg round is two exchanges (train, evaluate) with every data
owner, i.e. four sync hops on SyftBox. It then sends a 14 MB model to one data owner
and back (the test-only app ``tests/integration/assets/bigmodel_app``) on both.

Prints a markdown table. Needs the syftbox virtualenv (``scripts/
setup_syftbox_venv.sh``, run automatically); if it cannot be installed the script
prints why and exits 0 without measuring.

Usage::

    .venv/bin/python benchmarks/bench_syftbox.py [--rounds 4] [--repeats 1]
        [--no-big] [--json out.json] [--workdir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "tests" / "integration" / "assets"
sys.path.insert(0, str(ASSETS))

from syftbox_fl_jobs import (  # noqa: E402
    per_round_seconds,
    result_line,
    run_job,
    simulate_with_marks,
    unique_app_name,
)

from syft_flwr.testing.syftbox_network import (  # noqa: E402
    SyftBoxNetwork,
    SyftBoxUnavailable,
    ensure_syftbox_venv,
)

DS = "ds@example.org"
DATA_OWNERS = ("do1@example.org", "do2@example.org", "do3@example.org")
DEFAULT_APP = REPO / "examples" / "fedavg_tabular"
BIG_APP = ASSETS / "bigmodel_app"


@dataclass
class Side:
    """Measurements of one setting (local folders or SyftBox)."""

    name: str
    rounds: list[list[float]] = field(default_factory=list)  # per repeat
    job_seconds: list[float] = field(default_factory=list)
    big_round_trip: float | None = None
    big_nbytes: int | None = None
    results: list[dict[str, Any]] = field(default_factory=list)

    @property
    def first(self) -> list[float]:
        return [r[0] for r in self.rounds if r]

    @property
    def steady(self) -> list[float]:
        return [x for r in self.rounds for x in r[1:]]


def _mean(xs: list[float]) -> float | None:
    return statistics.fmean(xs) if xs else None


def _f(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _range(xs: list[float]) -> str:
    return f"{min(xs):.2f}–{max(xs):.2f}" if xs else "n/a"


def _diff(a: float | None, b: float | None) -> str:
    return "n/a" if a is None or b is None else f"{b - a:+.2f}"


def one_way_hops(net: SyftBoxNetwork, n: int = 3) -> list[float]:
    """Seconds for a small file written by do1 to appear at ds (``n`` samples)."""
    out = []
    do1 = net.party(DATA_OWNERS[0])
    for i in range(n):
        rel = f"datasites/{do1.email}/public/bench_hop_{i}_{time.time_ns()}.txt"
        payload = f"hop {i}".encode()
        path = do1.data_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        t0 = time.monotonic()
        tmp.write_bytes(payload)
        tmp.replace(path)
        net.wait_for_file(DS, rel, 30.0, size=len(payload))
        out.append(time.monotonic() - t0)
    return out


def run(args: argparse.Namespace) -> int:
    app = Path(args.app).resolve()
    rc = f"num-server-rounds={args.rounds} round-timeout=120"
    try:
        venv = ensure_syftbox_venv()
    except SyftBoxUnavailable as exc:
        print(
            f"SKIPPED: syftbox==0.4.0 could not be installed: {exc.reason}\n"
            "(the SyftBox benchmark needs scripts/setup_syftbox_venv.sh to succeed)"
        )
        return 0
    root = Path(args.workdir or tempfile.mkdtemp(prefix="bench_syftbox_")).resolve()
    root.mkdir(parents=True, exist_ok=True)
    local, syftbox = Side("local folders"), Side("SyftBox 0.4.0")
    print(f"work dir {root}", file=sys.stderr)

    for rep in range(args.repeats):
        print(
            f"[{rep + 1}/{args.repeats}] local-folder simulation ...", file=sys.stderr
        )
        sim, marks = simulate_with_marks(
            app, len(DATA_OWNERS), root / f"sim_{rep}", run_config=rc, timeout=600
        )
        if not sim.ok:
            print(f"simulation failed; logs in {sim.workdir / 'logs'}", file=sys.stderr)
            return 1
        local.rounds.append(per_round_seconds(marks))
        local.job_seconds.append(sim.seconds)
        local.results.append(result_line(sim.log(sim.researcher.email)) or {})
    if args.big:
        sim, _ = simulate_with_marks(BIG_APP, 1, root / "sim_big", timeout=600)
        res = result_line(sim.log(sim.researcher.email)) if sim.ok else None
        if res:
            local.big_round_trip = float(res["round_trip_s"])
            local.big_nbytes = int(res["model_nbytes"])

    with SyftBoxNetwork(root / "net", [DS, *DATA_OWNERS], venv=venv) as net:
        startup = net.startup_seconds
        hops = one_way_hops(net)
        for rep in range(args.repeats):
            print(
                f"[{rep + 1}/{args.repeats}] SyftBox network job ...", file=sys.stderr
            )
            job = run_job(
                net,
                app,
                root / f"job_{rep}",
                researcher=DS,
                data_owners=DATA_OWNERS,
                app_name=unique_app_name("bench"),
                run_config=rc,
                timeout=600,
            )
            job.monitor.stop()
            if not job.ok:
                print(job.report(), file=sys.stderr)
                return 1
            assert job.monitor.marks is not None
            syftbox.rounds.append(per_round_seconds(job.monitor.marks.marks))
            syftbox.job_seconds.append(job.seconds)
            syftbox.results.append(job.result() or {})
        if args.big:
            print("SyftBox network: >10 MB model ...", file=sys.stderr)
            job = run_job(
                net,
                BIG_APP,
                root / "job_big",
                researcher=DS,
                data_owners=DATA_OWNERS[:1],
                app_name=unique_app_name("bench_big"),
                timeout=600,
            )
            job.monitor.stop()
            res = job.result() if job.ok else None
            if res:
                syftbox.big_round_trip = float(res["round_trip_s"])
                syftbox.big_nbytes = int(res["model_nbytes"])
            syftbox_max_file = job.monitor.max_file_size
        else:
            syftbox_max_file = None

    table = render(args, app, local, syftbox, startup, hops, syftbox_max_file)
    print(table)
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "rounds": args.rounds,
                    "repeats": args.repeats,
                    "local_rounds_s": local.rounds,
                    "syftbox_rounds_s": syftbox.rounds,
                    "local_job_s": local.job_seconds,
                    "syftbox_job_s": syftbox.job_seconds,
                    "local_big_round_trip_s": local.big_round_trip,
                    "syftbox_big_round_trip_s": syftbox.big_round_trip,
                    "big_model_nbytes": syftbox.big_nbytes or local.big_nbytes,
                    "syftbox_max_file_bytes": syftbox_max_file,
                    "network_startup_s": startup,
                    "one_way_hop_s": hops,
                    "results": {"local": local.results, "syftbox": syftbox.results},
                },
                indent=2,
            )
        )
    if not args.keep and not args.workdir:
        shutil.rmtree(root, ignore_errors=True)
    return 0


def render(
    args: argparse.Namespace,
    app: Path,
    local: Side,
    syftbox: Side,
    startup: float | None,
    hops: list[float],
    max_file: int | None,
) -> str:
    lf, sf = _mean(local.first), _mean(syftbox.first)
    ls, ss = _mean(local.steady), _mean(syftbox.steady)
    la = _mean([x for r in local.rounds for x in r])
    sa = _mean([x for r in syftbox.rounds for x in r])
    lj, sj = _mean(local.job_seconds), _mean(syftbox.job_seconds)
    n = len(DATA_OWNERS)
    lines = [
        "### syft_flwr per-round time: SyftBox 0.4.0 network vs local folders",
        "",
        f"App `{app.name}`, {n} data owners, {args.rounds} rounds x {args.repeats} "
        "run(s), encryption on, one `python -m syft_flwr party` process per party.",
        "",
        "| measure | local folders (s) | SyftBox 0.4.0 (s) | sync overhead (s) |",
        "| --- | ---: | ---: | ---: |",
        f"| round 1 (incl. data-owner start-up) | {_f(lf)} | {_f(sf)} | {_diff(lf, sf)} |",
        f"| rounds 2..{args.rounds}, mean per round | {_f(ls)} | {_f(ss)} | "
        f"{_diff(ls, ss)} |",
        f"| rounds 2..{args.rounds}, min–max | {_range(local.steady)} | "
        f"{_range(syftbox.steady)} | |",
        f"| all rounds, mean per round | {_f(la)} | {_f(sa)} | {_diff(la, sa)} |",
        f"| whole job (processes start to exit) | {_f(lj)} | {_f(sj)} | "
        f"{_diff(lj, sj)} |",
    ]
    if args.big:
        mb = (syftbox.big_nbytes or local.big_nbytes or 0) / 1e6
        lines.append(
            f"| {mb:.0f} MB model to 1 data owner and back (send_and_receive) | "
            f"{_f(local.big_round_trip)} | {_f(syftbox.big_round_trip)} | "
            f"{_diff(local.big_round_trip, syftbox.big_round_trip)} |"
        )
    lines += [
        "",
        f"One FedAvg round = 2 exchanges (train, evaluate) x {n} data owners = 4 sync "
        "hops on SyftBox, so the steady-state overhead per hop is about "
        f"{_f(None if ls is None or ss is None else (ss - ls) / 4)} s.",
        f"Measured one-way sync hop (small file, do1 -> server -> ds): "
        f"{', '.join(f'{h:.2f}' for h in hops)} s; network start-up "
        f"{_f(startup)} s.",
    ]
    if max_file is not None:
        lines.append(
            f"Largest file seen on any party or the server during the big-model run: "
            f"{max_file} bytes (chunk limit {4 * 1024 * 1024})."
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--app", default=str(DEFAULT_APP), help="Flower app folder")
    p.add_argument("--rounds", type=int, default=4, help="num-server-rounds (>= 2)")
    p.add_argument("--repeats", type=int, default=1, help="jobs per setting")
    p.add_argument(
        "--no-big", dest="big", action="store_false", help="skip the >10 MB model run"
    )
    p.add_argument("--json", default=None, help="also write the numbers here")
    p.add_argument("--workdir", default=None, help="keep everything in this folder")
    p.add_argument("--keep", action="store_true", help="keep the temp work dir")
    args = p.parse_args(argv)
    if args.rounds < 2:
        p.error("--rounds must be at least 2 (round 1 includes start-up)")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
