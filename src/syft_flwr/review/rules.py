"""What may travel in a project package: one rule for the packer and the receipt.

The researcher's packer leaves out everything that is not reviewable source
(compiled bytecode, native modules, caches, hidden files, environments, data),
and the data owner's receipt refuses a package holding anything the packer
would not have packed: a reviewer reads text, so only text that reads the way
it runs may be approved. Refused as well: file names or text with control or
format characters (terminal escapes, bidi overrides, zero-width characters:
code that reads differently from what runs), text that is not UTF-8, and a
module next to a package of the same import name (the reviewer would read one
while Python runs the other).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from pathlib import PurePosixPath

__all__ = [
    "EXCLUDED_DIRS",
    "SOURCE_SUFFIXES",
    "ambiguity_problem",
    "files_problem",
    "name_problem",
    "skip_reason",
    "text_problem",
]

#: Files that travel: code and the small configs an app needs to run.
SOURCE_SUFFIXES = frozenset(
    {".py", ".toml", ".cfg", ".ini", ".txt", ".md", ".yaml", ".yml", ".json", ".lock"}
)
#: Folders never packed (besides every hidden one): environments, caches, data, logs.
EXCLUDED_DIRS = frozenset(
    {
        "__pycache__",
        "venv",
        "env",
        "node_modules",
        "simulation_logs",
        "data",
        "datasets",
        "build",
        "dist",
        "outputs",
    }
)
_BYTECODE = frozenset({".pyc", ".pyo"})
_NATIVE = frozenset({".so", ".pyd", ".dll", ".dylib"})
#: C0 controls but tab and newline, DEL, and a carriage return not before a
#: newline (a lone one is a line break to Python, and rewrites a terminal line).
_ASCII_BAD = re.compile(r"[\x00-\x08\x0b-\x0c\x0e-\x1f\x7f]|\r(?!\n)")
_NON_ASCII = re.compile(r"[^\x00-\x7f]")
#: Unicode categories never accepted in names or text: controls (C1), format
#: characters (bidi overrides and isolates, zero-width ones, the BOM), surrogates,
#: private use, and the line/paragraph separators.
_BAD_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Zl", "Zp"})


def skip_reason(path: str) -> str | None:
    """Why the packer leaves ``path`` out (``None``: it is packed).

    Parameters
    ----------
    path : str
        A relative POSIX path inside the app folder.

    Returns
    -------
    str or None
        In words a data owner understands, e.g. ``"compiled Python bytecode"``.
    """
    *dirs, name = path.split("/")
    for d in dirs:
        if d == "__pycache__":
            return "inside a __pycache__ folder (compiled bytecode)"
        if d.startswith("."):
            return f"inside the hidden folder {d}"
        if d in EXCLUDED_DIRS or d.endswith(".egg-info"):
            return (
                f"inside the folder {d} (environments, builds, data and logs stay home)"
            )
    suffix = PurePosixPath(name).suffix.lower()
    if name.startswith("."):
        return "a hidden file"
    if suffix in _BYTECODE:
        return "compiled Python bytecode (it runs without being the code reviewed)"
    if suffix in _NATIVE:
        return "a native module (machine code that cannot be reviewed)"
    if PurePosixPath(name).suffix not in SOURCE_SUFFIXES:
        return f"not a source file ({suffix or 'no suffix'})"
    return None


def _char_name(c: str) -> str:
    name = unicodedata.name(c, "")
    return f"U+{ord(c):04X}" + (f" ({name.lower()})" if name else "")


def _bad_char(c: str) -> bool:
    return unicodedata.category(c) in _BAD_CATEGORIES


def name_problem(path: str) -> str | None:
    """Why ``path`` is not an acceptable file name (``None``: it is).

    Every character must be printable: no control or format character, no
    separator other than a plain space.
    """
    for c in path:
        if not c.isprintable():
            return f"the name {path!r} holds {_char_name(c)}"
    return None


def text_problem(path: str, data: bytes) -> str | None:
    """Why the text of ``path`` cannot be reviewed as it runs (``None``: it can).

    Parameters
    ----------
    path : str
        The file's name (for the message).
    data : bytes
        Its content.

    Returns
    -------
    str or None
        Names the line and the character.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"{path} is not UTF-8 text (byte {exc.start})"
    bad = _ASCII_BAD.search(text)
    first = bad.start() if bad else None
    if not text.isascii():
        for m in _NON_ASCII.finditer(text, 0, len(text) if first is None else first):
            if _bad_char(m.group()):
                first = m.start()
                break
    if first is None:
        return None
    line = text.count("\n", 0, first) + 1
    return (
        f"{path} line {line} holds {_char_name(text[first])}, a control or format "
        "character that can make code read differently from what runs"
    )


def ambiguity_problem(paths: Iterable[str]) -> str | None:
    """A module and a package of one import name (``None`` if there is none).

    ``m.py`` next to a folder ``m/`` holding Python files: the reviewer may read
    the module while Python imports the package (or the other way round).
    """
    py = [p for p in paths if p.endswith(".py")]
    modules = {p[: -len(".py")] for p in py}
    folders = {str(parent) for p in py for parent in PurePosixPath(p).parents}
    both = sorted(modules & folders)
    if not both:
        return None
    m = both[0]
    return (
        f"{m}.py and the package folder {m}/ share one import name; the code "
        "read would not be the code run"
    )


def files_problem(files: Mapping[str, bytes]) -> str | None:
    """The first reason the file set ``files`` may not be reviewed and run.

    Every path must be one the packer packs (:func:`skip_reason`), with a clean
    name and text, and no module may share its import name with a package.

    Returns
    -------
    str or None
        ``None`` when every file may travel.
    """
    for path in sorted(files):
        reason = skip_reason(path)
        if reason is not None:
            return f"{path} is {reason}; such files are never packed"
        problem = name_problem(path) or text_problem(path, files[path])
        if problem is not None:
            return problem
    return ambiguity_problem(files)
