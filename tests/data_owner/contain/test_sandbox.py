"""The sandbox, attacked for real: contained children try what a hostile app would.

Each test starts a real child process with :func:`sandbox.command` and asserts
what the kernel refused, and, where the attack aims outside, what this side
saw (a listener that got no connection, a grandchild that is gone).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from syft_flwr.data_owner.contain import _landlock, sandbox
from syft_flwr.data_owner.contain.policy import ContainmentPolicy
from syft_flwr.data_owner.contain.probe import _judge, run_probe
from syft_flwr.errors import ConfigError, ContainmentUnavailable


def _can_contain() -> str | None:
    """Why this machine cannot contain (None: it can)."""
    if sys.platform != "linux":
        return f"{sys.platform} has no Linux namespaces"
    if _landlock.abi_version() < _landlock.MIN_ABI:
        return f"Landlock ABI {_landlock.abi_version()} < {_landlock.MIN_ABI}"
    r = subprocess.run(["unshare", "--user", "--net", "true"], capture_output=True)
    if r.returncode != 0:
        return "no unprivileged user namespaces: " + r.stderr.decode()[:200]
    return None


needs_containment = pytest.mark.skipif(
    _can_contain() is not None, reason=f"containment unavailable: {_can_contain()}"
)


def _run_contained(
    tmp_path: Path,
    body: str,
    *,
    policy: ContainmentPolicy | None = None,
    read: list[Path] | None = None,
    timeout: float = 60,
) -> tuple[subprocess.CompletedProcess[str], dict[str, object]]:
    """Run ``body`` (Python, after ``enter``) contained; its JSON ``out`` dict."""
    scratch = tmp_path / "scratch"
    scratch.mkdir(exist_ok=True)
    policy = policy or ContainmentPolicy()
    read = read or []
    spec = json.dumps(
        {"policy": _policy_kwargs(policy), "read": [str(p) for p in read]}
    )
    header = textwrap.dedent(
        f"""
        import json, os, sys
        from pathlib import Path
        from syft_flwr.data_owner.contain.policy import ContainmentPolicy
        from syft_flwr.data_owner.contain.sandbox import enter
        spec = json.loads({spec!r})
        enforced = enter(
            ContainmentPolicy(**spec["policy"]),
            read=[Path(p) for p in spec["read"]],
            write=[Path({str(scratch)!r})],
        )
        out = {{"summary": enforced.summary()}}
        """
    )
    (scratch / "hostile_mod.py").write_text(
        header + textwrap.dedent(body) + "\nprint(json.dumps(out), flush=True)\n"
    )
    argv, extra = sandbox.command(
        policy, read=read, write=[scratch], module="hostile_mod"
    )
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **extra}
    with subprocess.Popen(
        argv,
        cwd=scratch,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as p:
        try:
            stdout, stderr = p.communicate(timeout=timeout)
        finally:
            sandbox.release(p.pid)
    proc = subprocess.CompletedProcess(argv, p.returncode, stdout, stderr)
    lines = [ln for ln in stdout.splitlines() if ln.startswith("{")]
    return proc, (json.loads(lines[-1]) if lines else {})


def _policy_kwargs(policy: ContainmentPolicy) -> dict[str, object]:
    return {
        "level": policy.level,
        "memory_mb": policy.memory_mb,
        "cpu_seconds": policy.cpu_seconds,
        "max_processes": policy.max_processes,
        "max_file_mb": policy.max_file_mb,
        "allow_read": [str(p) for p in policy.allow_read],
        "allow_write": [str(p) for p in policy.allow_write],
    }


TRY = """
def attempt(fn):
    try:
        return "allowed: " + str(fn())
    except (OSError, MemoryError) as exc:
        return "refused: " + type(exc).__name__
"""


@needs_containment
def test_the_probe_finds_every_layer_enforced_on_this_machine() -> None:
    report = run_probe(ContainmentPolicy())
    assert report.summary() == "full", report.layers
    assert [x.name for x in report.layers] == list(sandbox.LAYERS)
    assert all(x.enforced for x in report.layers)


@needs_containment
def test_a_contained_app_cannot_reach_a_listener_or_resolve_a_name(
    tmp_path: Path,
) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.setblocking(False)
        port = listener.getsockname()[1]
        proc, out = _run_contained(
            tmp_path,
            TRY
            + f"""
import socket
out["connect"] = attempt(lambda: socket.create_connection(("127.0.0.1", {port}), 2))
try:
    out["dns"] = "allowed: " + str(socket.getaddrinfo("example.org", 443)[0][4])
except OSError as exc:
    out["dns"] = "refused: " + type(exc).__name__
""",
        )
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing ever connected from the sandbox
    assert proc.returncode == 0, proc.stderr
    assert out["summary"] == "full"
    assert str(out["connect"]).startswith("refused"), out
    assert str(out["dns"]).startswith("refused"), out


@needs_containment
def test_a_contained_app_reads_only_what_it_is_allowed(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.csv").write_text("x,y\n1,2\n")
    other = tmp_path / "other_data_owner"
    other.mkdir()
    (other / "train.csv").write_text("secret rows\n")
    key = tmp_path / "state" / "pvt.jwks.json"
    key.parent.mkdir()
    key.write_text('{"keys": "private"}')
    proc, out = _run_contained(
        tmp_path,
        TRY
        + f"""
out["own"] = attempt(lambda: open({str(data / "train.csv")!r}).read())
out["other"] = attempt(lambda: open({str(other / "train.csv")!r}).read())
out["key"] = attempt(lambda: open({str(key)!r}).read())
out["list_home"] = attempt(lambda: os.listdir(os.path.expanduser("~root")))
out["write_data"] = attempt(lambda: open({str(data / "x")!r}, "w").write("x"))
out["write_state"] = attempt(lambda: open({str(key.parent / "x")!r}, "w").write("x"))
out["scratch"] = attempt(lambda: open("scratch.txt", "w").write("ok"))
import numpy
out["numpy"] = float(numpy.arange(4.0).sum())
""",
        read=[data],
    )
    assert proc.returncode == 0, proc.stderr
    assert out["own"] == "allowed: x,y\n1,2\n"
    for attack in ("other", "key", "list_home", "write_data", "write_state"):
        assert out[attack] == "refused: PermissionError", (attack, out)
    assert out["scratch"] == "allowed: 2"
    assert out["numpy"] == 6.0  # the installation stays usable
    assert not (data / "x").exists() and not (key.parent / "x").exists()


@needs_containment
def test_memory_and_processes_past_the_limits_are_refused(tmp_path: Path) -> None:
    policy = ContainmentPolicy(memory_mb=1024, max_processes=16)
    proc, out = _run_contained(
        tmp_path,
        TRY
        + """
import mmap
out["8gb"] = attempt(lambda: mmap.mmap(-1, 8 * 1024**3))
out["bytes"] = attempt(lambda: len(bytearray(2 * 1024**3)))
pids = []
def bomb():
    for _ in range(64):
        pid = os.fork()
        if pid == 0:
            import time; time.sleep(5); os._exit(0)
        pids.append(pid)
    return len(pids)
out["forks"] = attempt(bomb)
out["started"] = len(pids)
for pid in pids:
    os.kill(pid, 9)
""",
        policy=policy,
    )
    assert proc.returncode == 0, proc.stderr
    assert out["8gb"] == "refused: OSError"
    assert out["bytes"] == "refused: MemoryError"
    assert out["forks"] == "refused: BlockingIOError"
    assert 0 < int(str(out["started"])) < 16


@needs_containment
def test_a_grandchild_does_not_outlive_the_contained_process(tmp_path: Path) -> None:
    marker = tmp_path / "scratch" / "alive"
    started = time.monotonic()
    proc, out = _run_contained(
        tmp_path,
        f"""
if os.fork() == 0:
    os.setsid()  # leaves the process group: only the PID namespace catches it
    import time
    for _ in range(100):
        open({str(marker)!r}, "a").write("x")
        time.sleep(0.1)
    os._exit(0)
import time
time.sleep(0.3)
""",
    )
    assert proc.returncode == 0, proc.stderr
    # run() returned: the pipes closed, so nothing holding them lived on.
    assert time.monotonic() - started < 8
    size = marker.stat().st_size
    time.sleep(0.5)
    assert marker.stat().st_size == size  # no longer writing: it is gone


@needs_containment
def test_a_worker_started_for_another_policy_is_refused(tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (scratch / "mismatch.py").write_text(
        textwrap.dedent(
            f"""
            from pathlib import Path
            from syft_flwr.data_owner.contain.policy import ContainmentPolicy
            from syft_flwr.data_owner.contain.sandbox import enter
            from syft_flwr.errors import ContainmentUnavailable
            try:
                enter(ContainmentPolicy(memory_mb=99999), read=[], write=[Path({str(scratch)!r})])
            except ContainmentUnavailable as exc:
                print("refused:", exc)
            """
        )
    )
    argv, extra = sandbox.command(
        ContainmentPolicy(), read=[], write=[scratch], module="mismatch"
    )
    proc = subprocess.run(
        argv,
        cwd=scratch,
        env={"PATH": "/usr/bin:/bin", **extra},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "refused:" in proc.stdout and "another containment policy" in proc.stdout


def test_containing_a_threaded_process_is_refused_with_the_reason() -> None:
    # This test process runs threads (numpy's BLAS, pytest): entering here
    # must refuse, never half-contain.
    import threading

    t = threading.Thread(target=time.sleep, args=(0.5,))
    t.start()
    try:
        with pytest.raises(ContainmentUnavailable, match="already runs threads"):
            sandbox.enter(ContainmentPolicy(), read=[], write=[])
    finally:
        t.join()


def test_level_none_contains_nothing_and_says_so() -> None:
    report = sandbox.enter(ContainmentPolicy(level="none"), read=[], write=[])
    assert report.summary() == "none"
    assert all(not x.enforced for x in report.layers)
    assert "--containment none" in report.layers[0].how


def test_the_probe_judges_by_what_this_side_saw() -> None:
    claimed = sandbox.Enforced(
        "full", tuple(sandbox.Layer(n, True, "claimed") for n in sandbox.LAYERS)
    )
    refused = {"refused": True, "detail": "no"}
    tried = {k: refused for k in ("connect", "read", "write", "memory", "fork")}
    tried["scratch"] = {"refused": False, "detail": "written"}
    result = {"enforced": claimed.to_json(), "tried": tried}
    policy = ContainmentPolicy()
    assert _judge(policy, result, reached=False, outlived=False).summary() == "full"
    # The child says "refused", but the listener got a connection: not enforced.
    leaked = _judge(policy, result, reached=True, outlived=True)
    assert leaked.summary() == "full except network, processes"
    assert "a socket reached" in leaked.layers[0].how
    assert "outlived" in leaked.layers[1].how


def test_a_malformed_containment_report_is_refused() -> None:
    good = sandbox.off("none").to_json()
    assert sandbox.Enforced.from_json(good).summary() == "none"
    for bad in (
        None,
        {"level": "full"},
        {"level": "root", "layers": []},
        {"level": "full", "layers": [{"name": "network", "enforced": True}]},
        {"level": "full", "layers": [{"name": "x", "enforced": "yes"}] * 5},
    ):
        with pytest.raises(ValueError):
            sandbox.Enforced.from_json(bad)


def test_the_policy_refuses_bad_values_naming_them() -> None:
    with pytest.raises(ConfigError, match="SYFT_FLWR_CONTAINMENT_MEMORY_MB"):
        ContainmentPolicy.from_env({"SYFT_FLWR_CONTAINMENT_MEMORY_MB": "lots"})
    with pytest.raises(ConfigError, match="not one of"):
        ContainmentPolicy.from_env({"SYFT_FLWR_CONTAINMENT": "partial"})
    with pytest.raises(ConfigError, match="at least 1"):
        ContainmentPolicy(max_processes=0)
    p = ContainmentPolicy.from_env(
        {"SYFT_FLWR_CONTAINMENT": "NONE", "SYFT_FLWR_CONTAINMENT_ALLOW_READ": "/a:/b"},
        memory_mb=512,
    )
    assert (p.level, p.memory_mb, p.allow_read) == (
        "none",
        512,
        (Path("/a"), Path("/b")),
    )


@needs_containment
def test_release_removes_the_workers_cgroup(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root's workers get a pids cgroup (others: RLIMIT_NPROC)")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (scratch / "idle.py").write_text(
        "from pathlib import Path\n"
        "from syft_flwr.data_owner.contain.policy import ContainmentPolicy\n"
        "from syft_flwr.data_owner.contain.sandbox import enter\n"
        f"enter(ContainmentPolicy(), read=[], write=[Path({str(scratch)!r})])\n"
    )
    argv, extra = sandbox.command(
        ContainmentPolicy(), read=[], write=[scratch], module="idle"
    )
    with subprocess.Popen(
        argv, cwd=scratch, env={"PATH": "/usr/bin:/bin", **extra}
    ) as p:
        assert p.wait(timeout=60) == 0
    folder = Path(f"/sys/fs/cgroup/pids/syft_flwr-worker-{p.pid}")
    assert folder.is_dir()  # left by the ended worker until released
    sandbox.release(p.pid)
    assert not folder.exists()


def test_boot_and_the_sandbox_name_the_same_hand_off_variables() -> None:
    from syft_flwr.data_owner.contain import boot

    assert (boot.SPEC_ENV, boot.REPORT_ENV) == (sandbox.SPEC_ENV, sandbox.REPORT_ENV)
