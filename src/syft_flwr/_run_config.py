"""Strict ``--run-config`` / ``--node-config`` parsing: every mistake is refused.

Flower's own parser drops what it cannot read (``"x="``, ``"x"``, ``"=3"``) and
keeps keys the app never defined, so a typo silently runs something else than
asked. Here every entry must be ``key=value``; run config keys must be keys of
the app's ``[tool.flwr.app.config]`` (the closest one is suggested) and values
must have the type of the app's default. Errors are :class:`ConfigError`
(a ``ValueError``), one line naming the entry and the fix.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from pathlib import Path
from typing import Any

from syft_flwr.errors import ConfigError

# check_run_config moved to syft_flwr.project (it reads the app folder, and the
# project module sits above this parser: one direction, no import cycle).
__all__ = ["check_counts", "flatten", "parse_overrides"]

# One entry: runs of non-blank characters and quoted strings, with no blank
# between them (``b="x y"`` is one entry).
_ENTRY = re.compile(r"""(?:[^\s"']|"[^"]*"|'[^']*')+""")
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
_FORMAT = 'use key=value, e.g. num-server-rounds=5 or name="text"'


def flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (how Flower names nested app config)."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def _entries(text: str, option: str) -> list[str]:
    entries = _ENTRY.findall(text)
    # Whatever the pattern skipped (an unclosed quote) is a mistake, not blank.
    if not _only_blanks_between(text, entries):
        raise ConfigError(f"{option} {text!r}: a quote is not closed; {_FORMAT}")
    return entries


def _only_blanks_between(text: str, entries: list[str]) -> bool:
    rest = text
    for entry in entries:
        head, _, rest = rest.partition(entry)
        if head.strip():
            return False
    return not rest.strip()


def _literal(raw: str) -> Any | None:
    """The TOML value ``raw`` (``5``, ``0.1``, ``true``, ``"x"``), else None."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return None


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, int):
        return "a whole number"
    if isinstance(value, float):
        return "a number"
    return "text"


def _typed(entry: str, key: str, raw: str, default: Any, option: str) -> Any:
    """``raw`` as the type of the app's ``default`` (None: no default known)."""
    value = _literal(raw)
    if isinstance(default, str) or (default is None and value is None):
        # Text may be given without quotes (name=fedprox means "fedprox").
        quoted = raw[:1] in "\"'"
        return value if isinstance(value, str) else (raw[1:-1] if quoted else raw)
    if value is None or isinstance(value, list | dict):
        if default is None:
            raise ConfigError(
                f"{option} {entry!r}: {raw!r} is not a value; use a number, true, "
                'false or "quoted text"'
            )
    elif default is None or _kind(value) == _kind(default):
        return value
    elif isinstance(default, float) and _kind(value) == "a whole number":
        return float(value)  # lr=1 means 1.0
    raise ConfigError(
        f"{option} {entry!r}: {key} must be {_kind(default)} (the app's default "
        f"is {default!r}), not {raw!r}"
    )


def _unknown(key: str, known: dict[str, Any], option: str, entry: str) -> ConfigError:
    if not known:
        return ConfigError(
            f"{option} {entry!r}: this app defines no config keys "
            "([tool.flwr.app.config] in its pyproject.toml is empty)"
        )
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    hint = f"did you mean {close[0]}?" if close else f"its keys: {', '.join(known)}"
    return ConfigError(f"{option} {entry!r}: the app has no config key {key!r}; {hint}")


def parse_overrides(
    overrides: str | list[str] | None,
    known: dict[str, Any],
    *,
    option: str = "--run-config",
    strict_keys: bool = True,
) -> dict[str, Any]:
    """Parse ``"k=v k2=v2"`` overrides (a string or a list of them) against ``known``.

    Parameters
    ----------
    overrides : str or list of str, optional
        What the user gave; a single ``*.toml`` path is read as a file of values.
    known : dict
        The app's flattened defaults: the keys allowed and their types.
    option : str
        The option's name, used in error messages.
    strict_keys : bool
        Refuse keys not in ``known`` (run config); a node config takes any key.

    Returns
    -------
    dict
        Each given key with its value, typed like the app's default.

    Raises
    ------
    ConfigError
        A malformed entry, an unknown key (the closest known one is suggested)
        or a value of the wrong type.
    """
    items = [overrides] if isinstance(overrides, str) else list(overrides or [])
    if len(items) == 1 and items[0].strip().endswith(".toml") and "=" not in items[0]:
        return _from_file(
            Path(items[0].strip()).expanduser(), known, option, strict_keys
        )
    out: dict[str, Any] = {}
    for text in items:
        for entry in _entries(text, option):
            key, sep, raw = entry.partition("=")
            if not sep or not _KEY.fullmatch(key) or not raw:
                raise ConfigError(f"{option} {entry!r}: {_FORMAT}")
            if strict_keys and key not in known:
                raise _unknown(key, known, option, entry)
            out[key] = _typed(entry, key, raw, known.get(key), option)
    return out


def _from_file(
    path: Path, known: dict[str, Any], option: str, strict_keys: bool
) -> dict[str, Any]:
    try:
        values = flatten(tomllib.loads(path.read_text()))
    except FileNotFoundError:
        raise ConfigError(f"{option} {str(path)!r}: no such file") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{option} {str(path)!r}: cannot read it ({exc})") from None
    for key, value in values.items():
        entry = f"{key} in {path}"
        if strict_keys and key not in known:
            raise _unknown(key, known, option, entry)
        default = known.get(key)
        if default is not None and _kind(default) != _kind(value):
            if not (isinstance(default, float) and _kind(value) == "a whole number"):
                raise ConfigError(
                    f"{option} {entry!r}: {key} must be {_kind(default)} (the "
                    f"app's default is {default!r}), not {value!r}"
                )
            values[key] = float(value)
    return values


def check_counts(num_data_owners: int | None, timeout: float | None = None) -> None:
    """Refuse a data owner count below 1 or a timeout that is not positive.

    Raises
    ------
    ConfigError
        Naming the option and what it accepts.
    """
    if num_data_owners is not None and (
        isinstance(num_data_owners, bool) or not isinstance(num_data_owners, int)
    ):
        raise ConfigError(
            f"--num-data-owners {num_data_owners!r}: give a whole number, 1 or more"
        )
    if num_data_owners is not None and num_data_owners < 1:
        raise ConfigError(
            f"--num-data-owners {num_data_owners}: a run needs at least 1 data owner"
        )
    if timeout is not None and not timeout > 0:
        raise ConfigError(
            f"--timeout {timeout}: give the seconds the whole run may take, more than 0"
        )
