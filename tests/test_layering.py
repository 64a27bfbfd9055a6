"""The layering of the design card, checked on the source: engine is pure, server does no client work."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("path", modules("engine"), ids=lambda p: p.name)
def test_engine_imports_no_transport_and_no_outer_layer(path):
    banned = ("grpc", "google.protobuf", "server", "clients", "sqlite3", "socket", "asyncio")
    bad = sorted(n for n in imports(path) if n.split(".")[0] in banned or n.startswith("google.protobuf"))
    assert not bad, f"{path.name} imports {bad}"


@pytest.mark.parametrize("path", [p for p in modules("server") if "api" not in p.parts],
                         ids=lambda p: p.name)
def test_server_never_imports_the_clients(path):
    assert not [n for n in imports(path) if n.split(".")[0] == "clients"]


def test_the_client_library_depends_only_on_the_generated_stubs():
    server_imports = {n for n in imports(ROOT / "clients" / "api.py") if n.split(".")[0] == "server"}
    assert all(n.startswith("server.api") for n in server_imports), server_imports
