#!/usr/bin/env bash
# Create (idempotently) a private virtualenv holding syftbox==0.4.0 for integration tests.
#
# syftbox hard-pins pydantic/fastapi/typing-extensions versions that conflict with Flower,
# so it must NEVER be installed into the project venv. It is run only as separate
# processes (uvicorn server + `syftbox client --service`) by
# syft_flwr.testing.syftbox_network.
#
# Usage: scripts/setup_syftbox_venv.sh [VENV_DIR]
#   VENV_DIR defaults to $SYFTBOX_VENV, else <repo>/.venv-syftbox.
#   The interpreter used to create the venv is $SYFTBOX_PYTHON, else python3.
# Exit status: 0 when the venv is ready (prints its path on stdout), non-zero with a
# one-line reason on stderr ("setup_syftbox_venv: ...") otherwise.
set -u -o pipefail

SYFTBOX_VERSION="0.4.0"
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${1:-${SYFTBOX_VENV:-$repo_root/.venv-syftbox}}"
python="${SYFTBOX_PYTHON:-python3}"
marker="$venv/.syftbox-installed"
log="$venv/.install.log"

fail() {
    echo "setup_syftbox_venv: $*" >&2
    exit 1
}

is_ready() {
    [ -x "$venv/bin/syftbox" ] && [ -x "$venv/bin/uvicorn" ] && [ -f "$marker" ] &&
        [ "$(cat "$marker" 2>/dev/null)" = "syftbox==$SYFTBOX_VERSION" ]
}

if is_ready; then
    echo "$venv"
    exit 0
fi

command -v "$python" >/dev/null 2>&1 || fail "interpreter '$python' not found (set SYFTBOX_PYTHON)"
mkdir -p "$venv" || fail "cannot create directory $venv"

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv" >"$log" 2>&1 ||
        fail "'$python -m venv $venv' failed: $(tail -n 1 "$log" 2>/dev/null)"
fi

# Remove a stale marker so an interrupted install is never mistaken for a finished one.
rm -f "$marker"

# uvicorn is a dependency of syftbox 0.4.0 (pinned there); name it anyway so the server
# entry point is guaranteed even if a future metadata change drops it.
if ! "$venv/bin/python" -m pip install --disable-pip-version-check --no-input \
    "syftbox==$SYFTBOX_VERSION" uvicorn >>"$log" 2>&1; then
    reason="$(grep -E '^(ERROR|error):' "$log" | tail -n 1)"
    [ -n "$reason" ] || reason="$(tail -n 1 "$log")"
    fail "pip install syftbox==$SYFTBOX_VERSION failed: ${reason:-unknown error} (log: $log)"
fi

[ -x "$venv/bin/syftbox" ] || fail "syftbox entry point missing after install (log: $log)"
[ -x "$venv/bin/uvicorn" ] || fail "uvicorn entry point missing after install (log: $log)"
# Import the server app from a scratch cwd: it reads ./server.env and may create ./data.
scratch="$(mktemp -d)" || fail "mktemp -d failed"
(cd "$scratch" && "$venv/bin/python" -c "import syftbox.server.server") >>"$log" 2>&1
import_rc=$?
rm -rf "$scratch"
[ "$import_rc" -eq 0 ] ||
    fail "syftbox server module does not import: $(tail -n 1 "$log") (log: $log)"

echo "syftbox==$SYFTBOX_VERSION" >"$marker"
echo "$venv"
