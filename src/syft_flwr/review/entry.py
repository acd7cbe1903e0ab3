"""Which file of a project each Flower entry point runs (what `show` names).

A reviewer reads files; Python runs modules. The ``[tool.flwr.app.components]``
references (``"pkg.module:attr"``) are resolved here exactly the way
:class:`~syft_flwr.review.loader.VerifiedSourceFinder` imports them, so the file
named is the file that runs, with the package ``__init__.py`` files that run
before it.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass

from syft_flwr.review.loader import module_files

__all__ = ["EntryPoint", "entry_point_lines", "entry_points"]

_ROLES = ("clientapp", "serverapp")


@dataclass(frozen=True)
class EntryPoint:
    """One component of the app and the file Python runs for it.

    Attributes
    ----------
    role : str
        ``"clientapp"`` (runs on the data owner's data) or ``"serverapp"``.
    ref : str
        The reference as the project's ``pyproject.toml`` gives it.
    path : str or None
        The project file that defines it; ``None`` when it is not one.
    runs_first : tuple of str
        The package ``__init__.py`` files imported before it, outermost first.
    problem : str or None
        Why it cannot be served from this project (``None``: it can).
    """

    role: str
    ref: str
    path: str | None
    runs_first: tuple[str, ...] = ()
    problem: str | None = None


def _components(files: Mapping[str, bytes]) -> dict[str, str]:
    try:
        doc = tomllib.loads(files["pyproject.toml"].decode("utf-8"))
    except (KeyError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return {}
    comps = doc.get("tool", {}).get("flwr", {}).get("app", {}).get("components", {})
    if not isinstance(comps, dict):
        return {}
    return {r: str(comps[r]) for r in _ROLES if r in comps}


def entry_points(files: Mapping[str, bytes]) -> list[EntryPoint]:
    """The app's entry points, each resolved to the file that runs.

    Parameters
    ----------
    files : mapping of str to bytes
        The project's files by relative path.

    Returns
    -------
    list of EntryPoint
        In the order clientapp, serverapp; missing components are left out.
    """
    modules = module_files(files)
    out = []
    for role, ref in _components(files).items():
        mod = ref.partition(":")[0]
        parts = mod.split(".")
        first = tuple(
            p
            for i in range(1, len(parts))
            if (p := modules.get(".".join(parts[:i]))) is not None
        )
        path = modules.get(mod)
        problem = None
        if mod not in modules:
            problem = f"{mod} is not a module of this project"
        elif path is None:
            problem = f"{mod} is a folder without code, not a module"
        out.append(EntryPoint(role, ref, path, first, problem))
    return out


def entry_point_lines(files: Mapping[str, bytes]) -> list[str]:
    """One line per entry point for ``syft_flwr show``.

    Example: ``clientapp: toy_app.client_app:app -> toy_app/client_app.py
    (after toy_app/__init__.py)``.
    """
    lines = []
    for e in entry_points(files):
        if e.problem is not None:
            where = f"NOT SERVED: {e.problem}"
        else:
            after = f" (after {', '.join(e.runs_first)})" if e.runs_first else ""
            where = f"{e.path}{after}"
        lines.append(f"{e.role}: {e.ref} -> {where}")
    return lines
