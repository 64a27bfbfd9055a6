"""The layering of the design card, checked on the source: engine is pure, server does no client work."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def absolute_imports(path: Path) -> set[str]:
    """Absolute imports of a module, as written."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def imports(path: Path) -> set[str]:
    """Absolute imports of a module, with the ``dsomarket.`` namespace prefix taken off."""
    return {n.removeprefix("dsomarket.") for n in absolute_imports(path)}


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("path", modules("engine"), ids=lambda p: p.name)
def test_engine_imports_no_transport_and_no_outer_layer(path):
    banned = ("grpc", "google.protobuf", "server", "clients", "sqlite3", "socket", "asyncio")
    bad = sorted(n for n in imports(path) if n.split(".")[0] in banned or n.startswith("google.protobuf"))
    assert not bad, f"{path.name} imports {bad}"


@pytest.mark.parametrize("path", modules("server"), ids=lambda p: p.name)
def test_server_never_imports_the_clients(path):
    assert not [n for n in imports(path) if n.split(".")[0] == "clients"]


@pytest.mark.parametrize("path", modules("clients"), ids=lambda p: p.name)
def test_the_client_library_never_imports_the_server(path):
    """An aggregator who installs the client imports the stubs (dsomarket.v1), never the server."""
    allowed = {"clients/demo.py", "clients/commands/service.py",   # they start an in-process server
               # `territory clear` fans interfaces out with the server's runner (local processes or Ray),
               # the one executor shared by the service and the command line; it imports no service code.
               "clients/commands/territory.py"}
    if str(path.relative_to(ROOT)) in allowed:
        return
    assert not [n for n in imports(path) if n.split(".")[0] == "server"], path.name


@pytest.mark.parametrize("path", modules("engine") + modules("server") + modules("clients") + modules("tests"),
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_uses_the_bare_top_level_names(path):
    """Only ``dsomarket.*``: a bare ``engine``/``server``/``clients`` would clash with PyPI packages."""
    assert not [n for n in absolute_imports(path) if n.split(".")[0] in ("engine", "server", "clients")]


@pytest.mark.parametrize("path", [p for p in modules("server") if p.name not in ("db.py", "pg.py")],
                         ids=lambda p: p.name)
def test_server_sql_is_portable_between_sqlite_and_postgresql(path):
    """Store SQL runs on both backends (server.db, server.pg): no SQLite-only statements or driver attributes."""
    text = path.read_text()
    sqlite_only = ("lastrowid", "INSERT OR ", "PRAGMA", "sqlite3.IntegrityError", "sqlite_master", "WITHOUT ROWID",
                   "LIMIT -1")
    assert not [s for s in sqlite_only if s in text], "use RETURNING, ON CONFLICT, db.IntegrityError, db.columns"
