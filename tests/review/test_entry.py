"""`show` names the file each entry point runs, resolved as the data owner imports it."""

from __future__ import annotations

from syft_flwr.review.entry import entry_point_lines, entry_points

PYPROJECT = b"""
[tool.flwr.app.components]
serverapp = "app.server:app"
clientapp = "%s"
"""


def _files(clientapp: str) -> dict[str, bytes]:
    return {
        "pyproject.toml": PYPROJECT % clientapp.encode(),
        "app/__init__.py": b"",
        "app/server.py": b"app = 1\n",
        "app/client.py": b"app = 2\n",
    }


def test_each_entry_point_is_named_with_the_file_that_runs():
    lines = entry_point_lines(_files("app.client:app"))
    assert lines == [
        "clientapp: app.client:app -> app/client.py (after app/__init__.py)",
        "serverapp: app.server:app -> app/server.py (after app/__init__.py)",
    ]


def test_a_package_entry_names_its_init_file_not_a_module_of_that_name():
    files = _files("app.impl:app") | {"app/impl/__init__.py": b"app = 3\n"}
    [client, _] = entry_points(files)
    assert client.path == "app/impl/__init__.py" and client.problem is None


def test_an_entry_outside_the_project_is_shown_as_not_served():
    [client, server] = entry_points(_files("os:system"))
    assert client.path is None and "os is not a module of this project" in (
        client.problem or ""
    )
    assert entry_point_lines(_files("os:system"))[0] == (
        "clientapp: os:system -> NOT SERVED: os is not a module of this project"
    )
    assert server.problem is None
