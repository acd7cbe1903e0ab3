"""The benchmarks run (``--quick``) and print the expected tables.

No timing assertions: this only proves the benchmark still works.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_transport.py"


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _number(cell: str) -> float:
    assert re.fullmatch(r"\d+(\.\d+)?", cell), cell
    return float(cell)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_quick_benchmark_prints_the_expected_tables() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYFT_FLWR_")}
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick"],
        capture_output=True,
        text=True,
        timeout=540,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()

    latency = {
        (c[0], c[1]): c
        for c in (_cells(x) for x in lines if x.startswith(("| memory", "| syftbox")))
    }
    assert set(latency) == {
        ("memory", "off"),
        ("memory", "on"),
        ("syftbox (folders + watchdog)", "off"),
        ("syftbox (folders + watchdog)", "on"),
    }
    for cells in latency.values():
        assert len(cells) == 5
        median, p95, bare = (_number(c) for c in cells[2:])
        assert 0 < median <= p95
        assert bare > 0

    throughput = [_cells(x) for x in lines if re.match(r"\| \d+ \|", x)]
    assert [c[0] for c in throughput] == ["1", "10"]
    for cells in throughput:
        assert len(cells) == 9
        assert all(_number(c) > 0 for c in cells)

    header = next(x for x in lines if x.startswith("| size (MB)"))
    for column in (
        "plaintext (s)",
        "encrypted (MB/s)",
        "bare serde (s)",
        "peak RSS enc (MB)",
    ):
        assert column in header
    assert any("Round-trip latency" in x for x in lines)
    assert any("Throughput over SyftBox" in x for x in lines)


def test_benchmark_help() -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0
    assert "--quick" in proc.stdout


DRIVE_BENCH = BENCH.parent / "bench_gdrive_requests.py"


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_drive_request_benchmark_prints_counts_per_data_owner_and_round() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYFT_FLWR_")}
    proc = subprocess.run(
        [sys.executable, str(DRIVE_BENCH), "--quick"],
        capture_output=True,
        text=True,
        timeout=540,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    rows = {
        c[0]: c
        for c in (_cells(x) for x in lines if x.startswith(("| researcher", "| data")))
    }
    assert set(rows) == {"researcher", "data owner (mean)"}
    for cells in rows.values():
        one_round, more_rounds, per_round = (_number(c) for c in cells[1:])
        assert 0 < one_round < more_rounds
        assert per_round > 0
    carried = next(x for x in lines if "carries at one round per minute" in x)
    assert int(carried.rsplit(":", 1)[1]) > 0


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_startup_benchmark_prints_its_table() -> None:
    bench = BENCH.parent / "bench_startup.py"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYFT_FLWR_")}
    proc = subprocess.run(
        [sys.executable, str(bench), "--sizes", "2", "--rounds", "3", "--repeats", "1"],
        capture_output=True,
        text=True,
        timeout=280,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [_cells(x) for x in proc.stdout.splitlines() if x.startswith("| ")]
    assert rows[0] == [
        "setup",
        "N",
        "command -> first request",
        "round 1",
        "steady round",
        "total",
        "p50 / p99 steady round",
        "rounds > 0.4 s",
        "CPU / steady round (ms)",
        "CPU / data owner / round (ms)",
        "researcher CPU / round (ms)",
    ]
    measured = {r[0]: r for r in rows[1:] if "not measured" not in r[0]}
    assert set(measured) == {
        "syft_flwr simulate (processes, folders)",
        "in-process limit (threads, memory)",
    }
    for cells in measured.values():
        assert cells[1] == "2"
        assert all(_number(c) >= 0 for c in cells[2:6])
        assert _number(cells[5]) > 0
        p50, p99 = (_number(x) for x in cells[6].split(" / "))
        assert 0 < p50 <= p99
        slow, of = cells[7].split(" of ")
        assert 0 <= int(slow) <= int(of)
    # CPU is measured for the processes of simulate (Linux /proc), not in-process.
    assert measured["in-process limit (threads, memory)"][8:] == ["-", "-", "-"]
    if Path("/proc/self/stat").exists():
        sim = measured["syft_flwr simulate (processes, folders)"]
        total, per_owner, researcher = (_number(x) for x in sim[8:11])
        assert total >= researcher >= 0
        assert abs(per_owner - total / 2) <= 1.0  # N = 2


LARGE_BENCH = BENCH.parent / "bench_large_model.py"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_large_model_benchmark_prints_the_expected_table() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYFT_FLWR_")}
    proc = subprocess.run(
        [sys.executable, str(LARGE_BENCH), "--quick"],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    header = _cells(next(x for x in lines if x.startswith("| N |")))
    assert header == [
        "N",
        "engine",
        "encryption",
        "s/round",
        "x Flower (no Ray)",
        "x Flower (Ray)",
        "round 1 (s)",
        "researcher peak RSS (MB)",
        "researcher writes/round (MB)",
        "writes / model",
    ]
    rows = [_cells(x) for x in lines if re.match(r"\| \d+ \|", x)]
    assert all(len(c) == len(header) for c in rows), rows
    # Both reference rows are always there: measured, or with the reason not.
    flower = [c for c in rows if c[1].startswith("Flower simulation engine")]
    assert [c[1] for c in flower] == [
        "Flower simulation engine (in process, no Ray)",
        "Flower simulation engine (Ray backend)",
    ]
    measured = [not re.match(r"(could not run|skipped)", c[3]) for c in flower]
    for cells, ok in zip(flower, measured, strict=True):
        if ok:
            assert _number(cells[3]) > 0 and _number(cells[7]) > 0
    syft = {c[2]: c for c in rows if c[1].startswith("syft_flwr")}
    assert set(syft) == {"off", "on"}
    for cells in syft.values():
        assert cells[0] == "2"
        seconds, first, rss = (_number(c) for c in (cells[3], cells[6], cells[7]))
        assert seconds > 0 and first > 0 and rss > 0
        for col, ok in ((4, measured[0]), (5, measured[1])):
            assert _number(cells[col]) > 0 if ok else cells[col] == "n/a"
        if sys.platform.startswith("linux"):
            # Every request carries the model to each of the 2 data owners.
            assert _number(cells[8]) > 0
            assert _number(cells[9]) >= 1.0
    limit = next(x for x in lines if x.startswith("Serde limit"))
    assert re.search(r"= \d+\.\d+ s$", limit), limit


def test_large_model_benchmark_help() -> None:
    proc = subprocess.run(
        [sys.executable, str(LARGE_BENCH), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0
    for option in (
        "--quick",
        "--model-mb",
        "--data-owners",
        "--skip-flower",
        "--ray-python",
    ):
        assert option in proc.stdout
