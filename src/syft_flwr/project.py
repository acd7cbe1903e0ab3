"""Flower app folders: read their config, bootstrap them, load their apps."""

from __future__ import annotations

import importlib
import re
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from syft_flwr._ids import normalize_email
from syft_flwr._run_config import flatten, parse_overrides
from syft_flwr.errors import AlreadyExistsError, ConfigError, PathNotFoundError

__all__ = [
    "DEFAULT_NODE_CONFIG",
    "ProjectConfig",
    "bootstrap",
    "check_run_config",
    "load_component",
    "load_project",
    "node_config_for",
    "parse_run_config",
]

TRANSPORTS = ("syftbox", "p2p")

MAIN_TEMPLATE = '''\
"""syft_flwr entry point: runs this Flower app as researcher or data owner.

The role is chosen by exact email match against [tool.syft_flwr] in
pyproject.toml, or explicitly with --role researcher|data-owner.
"""

from pathlib import Path

from syft_flwr.run import main

if __name__ == "__main__":
    main(Path(__file__).resolve().parent)
'''


@dataclass(frozen=True)
class ProjectConfig:
    """What syft_flwr needs from a Flower app's ``pyproject.toml``."""

    app_dir: Path
    name: str
    serverapp: str
    clientapp: str
    app_config: dict[str, Any] = field(default_factory=dict)
    aggregator: str | None = None
    datasites: tuple[str, ...] = ()
    transport: str | None = None
    app_name: str | None = None

    @property
    def flwr_app_name(self) -> str:
        """The app folder used on the wire (``flwr/<app_name>``, as upstream)."""
        base = self.app_name or self.name
        return base if base.startswith("flwr/") else f"flwr/{base}"

    @property
    def bootstrapped(self) -> bool:
        return self.aggregator is not None


def _read_pyproject(app_dir: Path) -> dict[str, Any]:
    path = app_dir / "pyproject.toml"
    if not app_dir.is_dir():
        raise PathNotFoundError(f"app folder not found: {app_dir}")
    if not path.is_file():
        raise PathNotFoundError(f"no pyproject.toml in {app_dir}: is it a Flower app?")
    try:
        return tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc


def load_project(app_dir: str | Path) -> ProjectConfig:
    """Read a Flower app folder's ``pyproject.toml``.

    Raises
    ------
    ConfigError
        Missing folder or file, unreadable TOML, no ServerApp/ClientApp
        components, or an invalid email in ``[tool.syft_flwr]``.
    """
    d = Path(app_dir).resolve()
    data = _read_pyproject(d)
    tool = data.get("tool", {})
    flwr_app = tool.get("flwr", {}).get("app", {})
    comps = flwr_app.get("components", {})
    if "serverapp" not in comps or "clientapp" not in comps:
        raise ConfigError(
            f"{d / 'pyproject.toml'} has no [tool.flwr.app.components] serverapp/clientapp"
        )
    syft = tool.get("syft_flwr", {})
    agg = syft.get("aggregator")
    datasites = tuple(normalize_email(e) for e in syft.get("datasites", []))
    transport = syft.get("transport")
    if transport is not None and transport not in TRANSPORTS:
        raise ConfigError(
            f"{d / 'pyproject.toml'}: [tool.syft_flwr] transport {transport!r} is "
            f"not known: use {' or '.join(TRANSPORTS)}"
        )
    return ProjectConfig(
        app_dir=d,
        name=str(data.get("project", {}).get("name", d.name)),
        serverapp=str(comps["serverapp"]),
        clientapp=str(comps["clientapp"]),
        app_config=dict(flwr_app.get("config", {})),
        aggregator=normalize_email(agg) if agg else None,
        datasites=datasites,
        transport=transport,
        app_name=syft.get("app_name"),
    )


def parse_run_config(
    base: dict[str, Any],
    overrides: str | list[str] | None,
    *,
    option: str = "--run-config",
    strict_keys: bool = True,
) -> dict[str, Any]:
    """Merge ``--run-config "k=v k2=v2"`` overrides into the app config.

    Every entry must be ``key=value`` with a key of ``base`` (unless
    ``strict_keys`` is false, as for a node config) and a value of the type of
    its default; see :func:`syft_flwr._run_config.parse_overrides`.

    Raises
    ------
    ConfigError
        If an override is malformed, names an unknown key or has the wrong type.
    """
    out = dict(base)
    out.update(
        parse_overrides(
            overrides, flatten(base), option=option, strict_keys=strict_keys
        )
    )
    return out


#: What a data owner's ``Context.node_config`` holds when nobody says otherwise:
#: one partition of one, as upstream syft-flwr gives (apps read these keys).
DEFAULT_NODE_CONFIG: dict[str, Any] = {"partition-id": 0, "num-partitions": 1}


def node_config_for(
    cfg: ProjectConfig, overrides: str | list[str] | dict[str, Any] | None = None
) -> dict[str, Any]:
    """A data owner's node config: the defaults, then this data owner's overrides.

    The node config describes the data owner's node (its partition, its data),
    so it comes only from the data owner: explicit ``--node-config`` values
    (``"k=v k2=v2"``, repeatable) over :data:`DEFAULT_NODE_CONFIG`. The app's
    ``[tool.flwr.app.config]`` is the researcher's and reaches the ClientApp as
    the *run* config only (upstream syft-flwr also copied it into the node
    config, which let the researcher set node values such as ``partition-id``).
    ``cfg`` is accepted for compatibility and not read.
    """
    base = dict(DEFAULT_NODE_CONFIG)
    if isinstance(overrides, dict):
        return {**base, **overrides}
    return parse_run_config(base, overrides, option="--node-config", strict_keys=False)


def check_run_config(app_dir: str | Path, overrides: str | list[str] | None) -> None:
    """Refuse a bad ``--run-config`` for the app in ``app_dir`` before anything runs.

    Raises
    ------
    ConfigError
        As :func:`parse_overrides`; also if the app folder cannot be read.
    """
    parse_overrides(overrides, flatten(load_project(app_dir).app_config))


def load_component(ref: str, app_dir: Path, *, add_to_path: bool = True) -> Any:
    """Import ``"pkg.module:attr"`` from the app folder.

    ``add_to_path=False`` leaves ``sys.path`` alone (an approved project is
    imported through its own finder, see :mod:`syft_flwr.review.loader`).

    Raises
    ------
    ConfigError
        If the module or attribute cannot be loaded.
    """
    mod_name, _, attr = ref.partition(":")
    if not mod_name or not attr:
        raise ConfigError(
            f"invalid component reference {ref!r}: use 'module:attribute'"
        )
    path = str(app_dir)
    if add_to_path and path not in sys.path:
        sys.path.insert(0, path)
    try:
        module = importlib.import_module(mod_name)
    except Exception as exc:
        raise ConfigError(f"cannot import {mod_name} from {app_dir}: {exc}") from exc
    try:
        obj = module
        for part in attr.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        raise ConfigError(f"{mod_name} has no attribute {attr!r}") from None
    return obj


def _render_table(values: dict[str, Any]) -> str:
    def lit(v: Any) -> str:
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, list | tuple):
            return "[" + ", ".join(lit(x) for x in v) + "]"
        return str(v).lower() if isinstance(v, bool) else str(v)

    lines = ["[tool.syft_flwr]"] + [f"{k} = {lit(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


def bootstrap(
    flwr_project_dir: str | Path,
    aggregator: str,
    datasites: list[str],
    transport: str | None = None,
    *,
    app_name: str | None = None,
    write_main: bool = True,
    force: bool = False,
) -> ProjectConfig:
    """Turn a Flower app folder into a syft_flwr app.

    Writes (or replaces) ``[tool.syft_flwr]`` in ``pyproject.toml`` (comments and
    the rest of the file are kept) and a ``main.py`` entry point.

    Parameters
    ----------
    flwr_project_dir:
        The Flower app folder.
    aggregator:
        The researcher's email.
    datasites:
        The data owners' emails.
    transport:
        ``"syftbox"`` (default) or ``"p2p"`` (Google Drive).
    app_name:
        Defaults to ``<aggregator>_<project>_<timestamp>`` (unique per bootstrap).
    write_main:
        Write ``main.py`` (default).
    force:
        Replace an existing ``main.py`` (by default it is never overwritten).

    Raises
    ------
    ConfigError
        Bad emails, no data owners, unknown transport, not a Flower app (also a
        ``ValueError``, as upstream raised).
    PathNotFoundError
        The folder or its ``pyproject.toml`` is missing (a ``FileNotFoundError``).
    AlreadyExistsError
        ``main.py`` exists and ``force`` is false (a ``FileExistsError``, as
        upstream); nothing is changed then.
    """
    d = Path(flwr_project_dir).resolve()
    cfg = load_project(d)  # validates it is a Flower app
    # Every input is checked before anything is written.
    agg, dss, t = _check_parties(aggregator, datasites, transport)
    main_py = d / "main.py"
    _check_main_free(main_py, write_main=write_main, force=force)
    name = app_name or f"{agg}_{cfg.name}_{int(time.time())}"
    table = _render_table(
        {"app_name": name, "aggregator": agg, "datasites": dss, "transport": t}
    )
    path = d / "pyproject.toml"
    _write_atomic(path, _with_table(path.read_text(), table))
    if write_main:
        _write_atomic(main_py, MAIN_TEMPLATE)
    return load_project(d)


#: The ``[tool.syft_flwr]`` table up to the next table header.
_TABLE = re.compile(r"^\[tool\.syft_flwr\]\n(?:(?!^\[).*\n?)*", re.MULTILINE)


def _with_table(text: str, table: str) -> str:
    """``pyproject.toml`` text with ``table`` replacing its ``[tool.syft_flwr]``.

    The rest of the file (comments included) is kept; a file without the table
    gets it appended.
    """
    if _TABLE.search(text):
        return _TABLE.sub(table + "\n", text, count=1).rstrip("\n") + "\n"
    return text.rstrip("\n") + "\n\n" + table


def _check_main_free(main_py: Path, *, write_main: bool, force: bool) -> None:
    """Refuse to overwrite an existing ``main.py`` unless ``force`` is set."""
    if write_main and main_py.exists() and not force:
        raise AlreadyExistsError(
            f"{main_py} already exists; remove it or bootstrap with force=True "
            "to replace it"
        )


def _check_parties(
    aggregator: str, datasites: list[str], transport: str | None
) -> tuple[str, list[str], str]:
    """The checked aggregator, data owners and transport of a bootstrap."""
    agg = normalize_email(aggregator)
    dss = [normalize_email(e) for e in datasites]
    if not dss:
        raise ConfigError(
            "give at least one data owner email (-d/--datasites; datasites= in Python)"
        )
    twice = sorted({e for e in dss if dss.count(e) > 1})
    if twice:
        raise ConfigError(
            f"data owner {', '.join(twice)} is listed twice: give each email once"
        )
    if agg in dss:
        raise ConfigError(
            f"{agg} is both the aggregator and a data owner: the researcher and "
            "each data owner need their own email"
        )
    t = transport or "syftbox"
    if t not in TRANSPORTS:
        raise ConfigError(
            f"transport {t!r} is not known: use {' or '.join(TRANSPORTS)}"
        )
    return agg, dss, t


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
