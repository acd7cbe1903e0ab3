"""The Drive transport's shape: collaborators that own their fields, in layers.

Issue 25 turned five mixins sharing 49 attributes into collaborators. These
checks read the source (``ast``) so the shape cannot drift back: every class
reads only the fields it sets itself, nobody reaches into another object's
private fields, and the modules import only the ones below them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import syft_flwr.transports.gdrive as gdrive
from syft_flwr.transports.base import Transport
from syft_flwr.transports.gdrive import GDriveTransport

PKG = Path(gdrive.__file__).parent
#: Bottom up, as the package docstring lists them: each may import only
#: modules before it.
LAYERS = [
    "_layout",
    "_auth",
    "_api",
    "_catalog",
    "_state",
    "_listing",
    "_folders",
    "_changes",
    "_shared",
    "_index",
    "_writes",
    "transport",
    "__init__",
]
#: A google-auth ``Credentials`` mixin by design (it extends a library class).
NOT_OWNERS = {"_PersistingCredentialsMixin"}


def _tree(module: str) -> ast.Module:
    return ast.parse((PKG / f"{module}.py").read_text(encoding="utf-8"))


def _gdrive_imports(tree: ast.Module) -> set[str]:
    prefix = "syft_flwr.transports.gdrive."
    return {
        node.module[len(prefix) :]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        and node.module
        and node.module.startswith(prefix)
    }


def _self_attrs(cls: ast.ClassDef) -> tuple[set[str], set[str]]:
    """(attributes the class defines or assigns on self, attributes it reads)."""
    own = {
        n.name
        for n in cls.body
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
    }
    own |= {
        t.id
        for n in cls.body
        if isinstance(n, (ast.Assign, ast.AnnAssign))
        for t in (n.targets if isinstance(n, ast.Assign) else [n.target])
        if isinstance(t, ast.Name)
    }
    read: set[str] = set()
    for node in ast.walk(cls):
        if not (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "self"
        ):
            continue
        if isinstance(node.ctx, ast.Store):
            own.add(node.attr)
        else:
            read.add(node.attr)
    return own, read


def test_the_modules_import_only_the_layers_below_them() -> None:
    assert sorted(LAYERS) == sorted(p.stem for p in PKG.glob("*.py"))
    for i, module in enumerate(LAYERS):
        above = _gdrive_imports(_tree(module)) - set(LAYERS[:i])
        assert not above, f"{module} imports {sorted(above)}, which sit above it"


def test_the_transport_is_no_mixin_stack() -> None:
    assert GDriveTransport.__bases__ == (Transport,)


def test_every_class_reads_only_its_own_fields() -> None:
    inherited = set(dir(Transport)) | {"identity", "_closed"}
    checked = []
    for module in LAYERS:
        for cls in ast.walk(_tree(module)):
            if not isinstance(cls, ast.ClassDef) or cls.name in NOT_OWNERS:
                continue
            own, read = _self_attrs(cls)
            if cls.name == "GDriveTransport":
                own |= inherited
            stray = read - own
            assert not stray, (
                f"{module}.{cls.name} reads fields it does not own: {stray}"
            )
            checked.append(cls.name)
    assert {"GDriveTransport", "DriveApi", "Catalog", "Bookmarks", "Folders"} <= set(
        checked
    )
    assert {"ChangesFeed", "SharedFolders", "Reader", "Writer"} <= set(checked)


def test_nobody_reaches_into_another_objects_private_fields() -> None:
    for module in LAYERS:
        for node in ast.walk(_tree(module)):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Attribute)
                and isinstance(node.value.value, ast.Name)
                and node.value.value.id == "self"
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                where = f"{module}.py:{node.lineno}"
                raise AssertionError(
                    f"{where}: self.{node.value.attr}.{node.attr} reaches into "
                    "another object's private field"
                )
