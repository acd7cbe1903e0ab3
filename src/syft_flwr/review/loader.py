"""Import an approved project from its verified source bytes, and nothing else.

Python's normal import reads ``__pycache__/*.pyc`` next to a source file (an
"unchecked-hash" one without even looking at the source), native modules and
``.pth`` tricks from any folder on ``sys.path``. A served project is therefore
never put on ``sys.path``: :class:`VerifiedSourceFinder` answers, first in
``sys.meta_path``, for every module of the project, and compiles it from the
bytes whose hash the data owner approved. It never reads or writes a bytecode
cache, and a module name under the project's top-level names that is not one
of its files is not found (it is not looked for elsewhere).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import threading
import types
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

__all__ = ["VerifiedSourceFinder", "load_verified", "module_files"]


def module_files(paths: Sequence[str] | Mapping[str, bytes]) -> dict[str, str | None]:
    """Module name -> the file Python runs for it (``None``: a namespace folder).

    Parameters
    ----------
    paths : sequence of str or mapping of str to bytes
        The project's relative POSIX paths.

    Returns
    -------
    dict of str to (str or None)
        ``"pkg"`` -> ``"pkg/__init__.py"``, ``"pkg.mod"`` -> ``"pkg/mod.py"``,
        a folder of modules without ``__init__.py`` -> ``None``.
    """
    out: dict[str, str | None] = {}
    for path in sorted(p for p in paths if p.endswith(".py")):
        parts = PurePosixPath(path).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if not parts or not all(p.isidentifier() for p in parts):
            continue  # not importable by name
        out[".".join(parts)] = path
        for i in range(1, len(parts)):
            out.setdefault(".".join(parts[:i]), None)
    return out


class _VerifiedLoader(importlib.abc.InspectLoader):
    """Runs one module from source bytes kept in memory (no cache read or written)."""

    def __init__(self, source: bytes | None, filename: str) -> None:
        self.source = source
        self.filename = filename

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None  # the default module object

    def exec_module(self, module: types.ModuleType) -> None:
        if self.source is None:
            return  # a namespace folder: nothing to run
        code = compile(self.source, self.filename, "exec", dont_inherit=True)
        exec(code, module.__dict__)  # noqa: S102  (the approved code, by design)

    def get_source(self, fullname: str) -> str | None:
        return None if self.source is None else self.source.decode("utf-8")

    def is_package(self, fullname: str) -> bool:
        return self.filename.endswith("__init__.py") or self.source is None


class VerifiedSourceFinder(importlib.abc.MetaPathFinder):
    """Finds the modules of one project in its verified files.

    Parameters
    ----------
    root : Path
        The working folder the files were written to (``__file__`` points there,
        so an app can read its own small config files).
    files : mapping of str to bytes
        The project's files, by relative path, as verified against the manifest.
    """

    def __init__(self, root: Path, files: Mapping[str, bytes]) -> None:
        self.root = Path(root).resolve()
        self.files = dict(files)
        self.modules = module_files(self.files)
        #: Top-level names the project owns: never looked up anywhere else.
        self.tops = frozenset(name.split(".")[0] for name in self.modules)

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None = None,
        target: types.ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname.split(".")[0] not in self.tops:
            return None
        if fullname not in self.modules:
            raise ModuleNotFoundError(
                f"No module named {fullname!r} in the approved project", name=fullname
            )
        rel = self.modules[fullname]
        folder = self.root.joinpath(*fullname.split("."))
        if rel is None:  # a folder of modules without __init__.py
            spec = importlib.machinery.ModuleSpec(
                fullname, _VerifiedLoader(None, str(folder)), is_package=True
            )
            spec.submodule_search_locations = [str(folder)]
            return spec
        origin = str(self.root / rel)
        is_package = rel.endswith("/__init__.py") or rel == "__init__.py"
        spec = importlib.machinery.ModuleSpec(
            fullname,
            _VerifiedLoader(self.files[rel], origin),
            origin=origin,
            is_package=is_package,
        )
        spec.has_location = True
        if is_package:
            spec.submodule_search_locations = [str(folder)]
        return spec

    def install(self) -> None:
        """Put this finder first in ``sys.meta_path``."""
        if self not in sys.meta_path:
            sys.meta_path.insert(0, self)

    def uninstall(self) -> None:
        """Take this finder out of ``sys.meta_path`` (imported modules stay)."""
        if self in sys.meta_path:
            sys.meta_path.remove(self)


_IMPORT_LOCK = threading.Lock()


def load_verified(
    work: Path, files: Mapping[str, bytes], ref: str
) -> tuple[Any, VerifiedSourceFinder]:
    """Import ``ref`` from the verified ``files`` of ``work``, never from elsewhere.

    A package already imported in this process under one of the project's
    top-level names (from the researcher's folder, or an earlier working folder)
    is forgotten first, or ``import`` would reuse it and the code that runs
    would not be the code approved.

    Returns
    -------
    tuple of (object, VerifiedSourceFinder)
        The component, and the finder (installed; uninstall it when done).
    """
    from syft_flwr.errors import ProjectNotApproved
    from syft_flwr.project import load_component

    root = work.resolve()
    finder = VerifiedSourceFinder(work, files)
    mod_name = ref.partition(":")[0]
    if mod_name not in finder.modules:
        raise ProjectNotApproved(f"{ref} is not a module of the approved project")
    with _IMPORT_LOCK:
        for name in [n for n in sys.modules if n.split(".")[0] in finder.tops]:
            origin = getattr(sys.modules[name], "__file__", None)
            if origin is None or root not in Path(origin).resolve().parents:
                del sys.modules[name]
        finder.install()
        try:
            obj = load_component(ref, work, add_to_path=False)
        except BaseException:
            finder.uninstall()
            raise
        origin = getattr(sys.modules.get(mod_name), "__file__", None)
    if origin is None or root not in Path(origin).resolve().parents:
        finder.uninstall()
        raise ProjectNotApproved(f"{ref} was not loaded from {work}; refusing to serve")
    return obj, finder
