"""Issue 25: the import graph of ``src/syft_flwr`` points down, has no cycle, and
big modules say why they are big.

The graph is read from the source with ``ast``: every ``import`` counts,
function-local ones included (they run, just later); imports under
``if TYPE_CHECKING:`` do not (they never run). An alias shim (an old module
path whose body is ``sys.modules[__name__] = <new module>``) is not a node: an
import of it is an import of the module it names.

The layer map (:data:`LAYERS`) is the written rule, also drawn in
``docs/architecture.md``; a module may import from its own layer or any layer
below, never from a layer above. A new module must be placed in the map
(the test names it), so every new file is a conscious choice of layer.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

import syft_flwr

SRC = Path(syft_flwr.__file__).parent
PKG = "syft_flwr"

#: Rank per module or package (longest dotted prefix wins); higher is higher up.
#: Keep in step with the picture in docs/architecture.md.
LAYERS: dict[str, tuple[int, str]] = {
    # 7 public faces: what users import or run. Nothing imports them.
    "syft_flwr": (7, "public faces"),  # the package root (__init__) only
    "syft_flwr.__main__": (7, "public faces"),
    "syft_flwr.cli": (7, "public faces"),
    "syft_flwr.bootstrap": (7, "public faces"),  # upstream path, re-export
    "syft_flwr.utils": (7, "public faces"),  # upstream helpers for notebooks
    # 6 runners: start parties, simulations and the test networks.
    "syft_flwr.run": (6, "runners"),
    "syft_flwr.run_simulation": (6, "runners"),
    "syft_flwr.simulation": (6, "runners"),
    "syft_flwr.testing": (6, "runners"),
    # 5 roles: the researcher, the data owner, the review of projects.
    "syft_flwr.researcher": (5, "roles"),
    "syft_flwr.data_owner": (5, "roles"),
    "syft_flwr.review": (5, "roles"),
    "syft_flwr.events": (5, "roles"),  # documented path; the watcher factory
    "syft_flwr.fl_orchestrator": (5, "roles"),  # documented path, re-exports
    "syft_flwr.strategy": (5, "roles"),
    "syft_flwr.history": (5, "roles"),
    # 4 wire: bytes on a transport (and serde, Flower messages to bytes).
    "syft_flwr.wire": (4, "wire"),
    "syft_flwr.serde": (4, "wire"),
    # The keys in use sit with the wire: the encryption policy plugs the cipher
    # into the envelope (its codec is a wire.envelope.BodyCodec, its policy a
    # wire.mailbox.CodecPolicy) and this party's own keys and state MAC load
    # through it. Splitting crypto/policy.py (codec to the wire side, key
    # loading down here) is the follow-up that lets these drop to layer 3.
    "syft_flwr.crypto.policy": (4, "wire"),
    "syft_flwr.crypto.identity": (4, "wire"),  # keys show/trust/rotate, via policy
    "syft_flwr.crypto.own_state": (4, "wire"),  # loads own keys through policy
    # 3 crypto: keys, prekeys, trust pins, the cipher, key stores, state MACs.
    "syft_flwr.crypto": (3, "crypto"),
    # 2 the network: the SyftFlwrClient (who am I, where is my folder) and transports.
    "syft_flwr.client": (2, "client and transports"),
    "syft_flwr.transports": (2, "client and transports"),
    # 1 base utilities: no syft_flwr import above this layer.
    "syft_flwr.errors": (1, "base"),
    # The one strict JSON reader for everything read from a shared folder: it
    # lives with the wire (its main reader) but depends on errors only, and
    # crypto (peers' DIDs) and review read through it too.
    "syft_flwr.wire.strict_json": (1, "base"),
    "syft_flwr.consts": (1, "base"),
    "syft_flwr.config": (1, "base"),
    "syft_flwr._logs": (1, "base"),
    "syft_flwr.progress": (1, "base"),
    "syft_flwr._ids": (1, "base"),
    "syft_flwr.project": (1, "base"),
    "syft_flwr._run_config": (1, "base"),
    "syft_flwr._version": (1, "base"),
    "syft_flwr._email": (1, "base"),
    "syft_flwr._fs": (1, "base"),
    "syft_flwr._printable": (1, "base"),
    "syft_flwr._proctitle": (1, "base"),
    "syft_flwr._flwr_compat": (1, "base"),
}

#: Imports that point up today, each with why; the splits of issue 25 remove
#: them (the lead trims this list at merge). Do not add to it: move the code.
KNOWN_UPWARD: dict[tuple[str, str], str] = {}


#: Modules over MAX_LINES lines today with no reason written at their top; the
#: splits of issue 25 shrink them (the lead trims this list at merge). A new
#: big module writes its reason instead (``# Size: ...`` or a docstring line
#: starting ``Size:``).
MAX_LINES = 400
KNOWN_BIG: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    line: int


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    # Every import node, at any depth, except the bodies of `if TYPE_CHECKING:`.
    found: list[ast.Import | ast.ImportFrom] = []
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        stack.extend(ast.iter_child_nodes(node))
    return found


def _named(
    node: ast.Import | ast.ImportFrom, name: str, is_pkg: bool, sources: set[str]
) -> list[str]:
    """Dotted modules ``node`` imports, relative imports made absolute.

    ``from pkg import mod`` names the module ``pkg.mod``; ``from mod import x``
    (a function, a class) names ``mod``.
    """
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        parts = name.split(".") if is_pkg else name.split(".")[:-1]
        parts = parts[: len(parts) - (node.level - 1)]
        base = ".".join(parts + ([node.module] if node.module else []))
    names = (f"{base}.{alias.name}" for alias in node.names)
    return [n if n in sources else base for n in names]


def _shim_target(tree: ast.Module) -> str | None:
    """The module an alias shim stands for, or None if this is not a shim."""
    is_shim = any(
        isinstance(n, ast.Assign)
        and isinstance(n.targets[0], ast.Subscript)
        and ast.unparse(n.targets[0]) == "sys.modules[__name__]"
        for n in tree.body
    )
    if not is_shim:
        return None
    for n in tree.body:
        if isinstance(n, ast.ImportFrom) and n.module and n.names[0].asname:
            return f"{n.module}.{n.names[0].name}"
    raise AssertionError("an alias shim must import the module it stands for")


@dataclass
class Graph:
    modules: dict[str, Path]
    shims: dict[str, str]
    edges: list[Edge]


def _owner(name: str, modules: dict[str, Path]) -> str | None:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def build_graph() -> Graph:
    sources = _sources()
    trees = {n: ast.parse(p.read_text(encoding="utf-8")) for n, p in sources.items()}
    shims = {n: t for n, tree in trees.items() if (t := _shim_target(tree))}
    modules = {n: p for n, p in sources.items() if n not in shims}
    edges: set[Edge] = set()
    for name, path in modules.items():
        for node in _imports(trees[name]):
            for dotted in _named(node, name, path.name == "__init__.py", set(sources)):
                if dotted != PKG and not dotted.startswith(PKG + "."):
                    continue
                owner = _owner(dotted, sources)
                owner = shims.get(owner, owner) if owner else None  # through a shim
                if owner and owner != name:
                    edges.add(Edge(name, owner, node.lineno))
    return Graph(modules, shims, sorted(edges, key=lambda e: (e.src, e.dst, e.line)))


def layer_of(module: str) -> tuple[int, str] | None:
    """The layer of ``module`` by its longest prefix in LAYERS (the root: exact)."""
    if module == PKG:
        return LAYERS[PKG]
    name = module
    while name and name != PKG:
        if name in LAYERS:
            return LAYERS[name]
        name = name.rpartition(".")[0]
    return None


def _cycles(modules: set[str], edges: list[Edge]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan, iterative)."""
    succ: dict[str, set[str]] = {m: set() for m in modules}
    for e in edges:
        succ[e.src].add(e.dst)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    for root in sorted(modules):
        if root in index:
            continue
        work = [(root, iter(sorted(succ[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(succ[w]))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                group = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    group.append(w)
                    if w == v:
                        break
                if len(group) > 1:
                    groups.append(sorted(group))
    return groups


@pytest.fixture(scope="module")
def graph() -> Graph:
    return build_graph()


def test_the_graph_is_read_from_the_source(graph: Graph) -> None:
    # Guards the reader itself: known imports of each kind are found.
    pairs = {(e.src, e.dst) for e in graph.edges}
    assert ("syft_flwr", "syft_flwr.run") in pairs  # module level
    assert ("syft_flwr.review.serve", "syft_flwr.data_owner.runner") in pairs  # local
    assert ("syft_flwr.events", "syft_flwr.data_owner.loop") in pairs  # package
    # through an alias shim: syft_flwr.fl_orchestrator re-exports moved modules
    assert all(e.dst not in graph.shims for e in graph.edges)
    # TYPE_CHECKING-only imports never run: history only names SimulationResult
    assert ("syft_flwr.history", "syft_flwr.simulation") not in pairs
    assert "syft_flwr.rpc" in graph.shims and graph.shims["syft_flwr.rpc"] == (
        "syft_flwr.wire.mailbox"
    )


def test_every_module_has_a_layer(graph: Graph) -> None:
    unplaced = sorted(m for m in graph.modules if layer_of(m) is None)
    assert not unplaced, (
        f"place these modules in LAYERS (and docs/architecture.md): {unplaced}"
    )


def test_no_import_cycle(graph: Graph) -> None:
    cycles = _cycles(set(graph.modules), graph.edges)
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_no_import_points_up(graph: Graph) -> None:
    upward = []
    for e in graph.edges:
        (src_rank, src_layer), (dst_rank, dst_layer) = layer_of(e.src), layer_of(e.dst)
        if dst_rank > src_rank and (e.src, e.dst) not in KNOWN_UPWARD:
            upward.append(
                f"{e.src}:{e.line} ({src_layer}) imports {e.dst} ({dst_layer})"
            )
    assert not upward, "imports pointing up the layers:\n" + "\n".join(upward)


def test_known_upward_imports_are_still_there(graph: Graph) -> None:
    # A fixed arrow leaves the list, so the list never hides a new one.
    pairs = {(e.src, e.dst) for e in graph.edges}
    stale = sorted(set(KNOWN_UPWARD) - pairs)
    assert not stale, f"no longer imported, remove from KNOWN_UPWARD: {stale}"


def _says_why_big(text: str) -> bool:
    head = text.splitlines()[:40]
    return any(line.lstrip("# \"'(").startswith("Size:") for line in head)


def test_big_modules_say_why(graph: Graph) -> None:
    unexplained = []
    for name, path in graph.modules.items():
        text = path.read_text(encoding="utf-8")
        lines = len(text.splitlines())
        if lines > MAX_LINES and name not in KNOWN_BIG and not _says_why_big(text):
            unexplained.append(f"{name} ({lines} lines)")
    assert not unexplained, (
        f"over {MAX_LINES} lines with no 'Size:' reason at the top: {unexplained}"
    )


def test_known_big_modules_are_still_big(graph: Graph) -> None:
    # A module split below the limit leaves the list (so the list only shrinks).
    small = sorted(
        n
        for n in KNOWN_BIG
        if n not in graph.modules
        or len(graph.modules[n].read_text(encoding="utf-8").splitlines()) <= MAX_LINES
    )
    assert not small, (
        f"no longer over {MAX_LINES} lines, remove from KNOWN_BIG: {small}"
    )


def test_the_checks_catch_what_they_guard() -> None:
    # The checks themselves can fail: a cycle, an upward arrow and a reason line.
    a, b = "syft_flwr.wire.envelope", "syft_flwr.wire.frames"
    assert _cycles({a, b}, [Edge(a, b, 1), Edge(b, a, 2)]) == [sorted([a, b])]
    assert (
        layer_of("syft_flwr.wire.mailbox")[0] < layer_of("syft_flwr.researcher.grid")[0]
    )
    assert layer_of("syft_flwr.cli._simulate") == LAYERS["syft_flwr.cli"]
    assert layer_of("syft_flwr.brand_new_module") is None
    assert _says_why_big(
        '"""Mailbox.\n\nSize: one format, read and written together.\n"""'
    )
    assert _says_why_big("# Size: the whole fake Drive API in one place\n")
    assert not _says_why_big('"""Just a module."""\n')


#: The package root holds public faces only: each non-private module at the
#: top of ``syft_flwr`` is named here with where it is documented (or it is
#: an alias shim of a moved module, or private: ``_name``).
ROOT_FACES: dict[str, str] = {
    "syft_flwr.__main__": "python -m syft_flwr",
    "syft_flwr.bootstrap": "upstream path (docs/migrating.md)",
    "syft_flwr.config": "docs/migrating.md, README (Settings.from_env)",
    "syft_flwr.consts": "docs/migrating.md",
    "syft_flwr.errors": "docs/migrating.md (SyftFlwrError and its family)",
    "syft_flwr.history": "README, notebooks/researcher.ipynb",
    "syft_flwr.project": "docs/api.md, docs/review.md, notebooks",
    "syft_flwr.run": "upstream path (main.py), tests/compat",
    "syft_flwr.run_simulation": "upstream path, tests/compat",
    "syft_flwr.serde": "docs/api.md",
    "syft_flwr.utils": "docs/migrating.md",
}


def test_the_package_root_holds_public_faces(graph: Graph) -> None:
    top = {
        n
        for n, p in graph.modules.items()
        if n.count(".") == 1 and p.name != "__init__.py"
    }
    private = {n for n in top if n.rpartition(".")[2].startswith("_")}
    unnamed = sorted(top - private - set(ROOT_FACES))
    assert not unnamed, (
        f"not a public face: move under a home, make private, or document: {unnamed}"
    )
    gone = sorted(set(ROOT_FACES) - top)
    assert not gone, f"no longer a module at the root, update the lists: {gone}"
