"""The layers point one way: vlm_engine <- strategy <- daemon; the core does no I/O and reads no clock."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN_IMPORTS = {
    "vlm_engine": {"strategy", "daemon"},
    "strategy": {"daemon"},
}
NETWORK_MODULES = {
    "socket",
    "http",
    "urllib",
    "httpx",
    "requests",
    "aiomqtt",
    "ib_async",
    "ibapi",
    "asyncio",
}
CLOCK_CALLS = {
    ("datetime", "now"),
    ("datetime", "utcnow"),
    ("time", "time"),
    ("time", "sleep"),
    ("date", "today"),
    ("time", "monotonic"),
    ("time", "perf_counter"),
}


def _sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _imported_roots(tree: ast.AST) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", sorted(FORBIDDEN_IMPORTS))
def test_import_when_core_module_then_never_points_up_the_layers(package: str) -> None:
    offenders = [
        f"{path.relative_to(ROOT)} imports {bad}"
        for path in _sources(package)
        for bad in _imported_roots(ast.parse(path.read_text())) & FORBIDDEN_IMPORTS[package]
    ]
    assert offenders == []


@pytest.mark.parametrize("package", ["strategy", "vlm_engine"])
def test_import_when_core_module_then_no_network_or_event_loop(package: str) -> None:
    offenders = [
        f"{path.relative_to(ROOT)} imports {bad}"
        for path in _sources(package)
        for bad in _imported_roots(ast.parse(path.read_text())) & NETWORK_MODULES
    ]
    assert offenders == []


def test_call_when_strategy_module_then_no_clock_reads_or_sleeps() -> None:
    offenders = []
    for path in _sources("strategy"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name)
                and (node.func.value.id, node.func.attr) in CLOCK_CALLS
            ):
                offenders.append(
                    f"{path.relative_to(ROOT)}:{node.lineno} {node.func.value.id}.{node.func.attr}()"
                )
    assert offenders == []


def test_walk_when_packages_exist_then_every_layer_has_sources() -> None:
    for package in ("daemon", "strategy", "vlm_engine"):
        assert _sources(package), package
