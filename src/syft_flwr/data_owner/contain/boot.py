"""Start a contained process: contain it first, then run the target module.

Run as ``python <this file> <module> [args...]`` with the containment spec in
``_SYFT_FLWR_CONTAIN_SPEC`` (see :func:`syft_flwr.data_owner.contain.sandbox.command`).

Why a script and not ``python -m``: a new user namespace can only be entered,
and Landlock only covers every thread, while the process is single-threaded,
and importing the ``syft_flwr`` package imports numpy, whose BLAS starts
threads. So this file imports nothing of the package's ``__init__``: it loads
the few stdlib-only containment modules under a bare stand-in for the package,
contains the process, forgets those modules, records what holds for
:func:`~syft_flwr.data_owner.contain.sandbox.enter`, and only then runs the
target, whose imports start from a clean slate.
"""

from __future__ import annotations

import importlib.machinery
import json
import os
import runpy
import sys
import types

#: Kept in step with ``sandbox.SPEC_ENV`` / ``sandbox.REPORT_ENV`` (this file
#: cannot import the package before it has contained the process).
SPEC_ENV = "_SYFT_FLWR_CONTAIN_SPEC"
REPORT_ENV = "_SYFT_FLWR_CONTAIN_REPORT"


def _package_dir() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.dirname(os.path.dirname(here))  # .../syft_flwr


def _contain(spec: dict[str, object]) -> dict[str, object]:
    """Contain this process under ``spec``; the report (or why not), as JSON."""
    stub = types.ModuleType("syft_flwr")
    stub.__path__ = [_package_dir()]
    stub.__spec__ = importlib.machinery.ModuleSpec("syft_flwr", None, is_package=True)
    sys.modules["syft_flwr"] = stub
    try:
        from syft_flwr.data_owner.contain import sandbox
        from syft_flwr.errors import ContainmentUnavailable

        try:
            return {"report": sandbox.contain_from_spec(spec).to_json()}
        except ContainmentUnavailable as exc:
            return {"unavailable": str(exc), "layers": list(exc.layers)}
    finally:
        for name in [n for n in sys.modules if n.split(".")[0] == "syft_flwr"]:
            del sys.modules[name]


def main() -> None:
    """Contain, record the outcome, run ``sys.argv[1]`` as ``__main__``."""
    if len(sys.argv) < 2:
        sys.exit("usage: boot.py MODULE [ARGS...]")
    # Like ``python -m``: the working folder first on the path, not this folder.
    sys.path[0] = os.getcwd()
    spec = json.loads(os.environ.pop(SPEC_ENV))
    outcome = _contain(spec)
    outcome["spec"] = spec
    os.environ[REPORT_ENV] = json.dumps(outcome)
    target = sys.argv[1]
    sys.argv = [target, *sys.argv[2:]]
    runpy.run_module(target, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
