"""Source of a ClientApp that misbehaves on request (written into an app folder).

The action comes in the request's ``config`` record; ``target``/``port`` name
what to attack. Kept as text: only the contained worker ever imports it.
"""

SOURCE = r'''
import fcntl, os, signal, socket, stat, struct, subprocess, sys, time

from flwr.app import Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

app = ClientApp()


def _protocol_fd():
    """The worker's reply pipe: a hostile app can find and write to it."""
    for fd in range(3, 64):
        try:
            st = os.fstat(fd)
        except OSError:
            continue
        if stat.S_ISFIFO(st.st_mode) and (
            fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_WRONLY
        ):
            return fd
    raise RuntimeError("no protocol pipe found")


def _frame(kind, payload, size=None):
    os.write(_protocol_fd(), kind + struct.pack(">I", len(payload) if size is None else size) + payload)
    time.sleep(30)


def _attack(action, cfg):
    target, port = str(cfg.get("target", "")), int(cfg.get("port", 0))
    if action == "sleep":
        time.sleep(30)
    elif action == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "raise":
        raise ValueError("the app failed on purpose")
    elif action == "oversized":
        _frame(b"A", b"", size=2**31)
    elif action == "garbled":
        _frame(b"A", b"not a flower message")
    elif action == "bad_json":
        _frame(b"E", b"{not json")
    elif action == "wrong_kind":
        _frame(b"R", b"{}")
    elif action == "connect":
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    elif action == "dns":
        socket.getaddrinfo("example.org", 443)
    elif action == "read":
        with open(target, "rb") as f:
            f.read()
    elif action == "write":
        with open(target, "w") as f:
            f.write("written by the ClientApp")
    elif action == "fork_bomb":
        while True:
            os.fork()
    elif action == "allocate":
        b = bytearray(8 * 1024**3)
        b[-1] = 1
    elif action == "grandchild":
        subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(120)", str(cfg["marker"])],
            start_new_session=True,
        )


@app.train()
def train(msg, context):
    cfg = msg.content["config"] if "config" in msg.content else {}
    action = str(cfg.get("action", "ok"))
    n = int(context.state["count"]["n"]) + 1 if "count" in context.state else 1
    context.state["count"] = MetricRecord({"n": n})
    if action == "forge":
        evil = Message(RecordDict({"m": MetricRecord({"n": -1})}), dst_node_id=4242, message_type="evaluate")
        return evil
    _attack(action, cfg)
    data_dir = os.environ.get("DATA_DIR")
    rows = len(open(os.path.join(data_dir, "data.csv")).read().splitlines()) if data_dir else 0
    return Message(RecordDict({"m": MetricRecord({"n": n, "rows": rows})}), reply_to=msg)
'''


def write_app(folder) -> None:
    """A one-module app folder ``folder/hostile/client.py`` (``hostile.client:app``)."""
    pkg = folder / "hostile"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "client.py").write_text(SOURCE)
