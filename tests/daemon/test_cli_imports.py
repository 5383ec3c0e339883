"""The command line loads its heavy libraries only in the subcommand that runs (fast `--help`)."""

from __future__ import annotations

import pytest

from tests.import_probe import modules_loaded_after

HEAVY = (
    "torch",
    "transformers",
    "xgboost",
    "pandas",
    "mplfinance",
    "matplotlib",
    "ib_async",
    "ray",
)

_PARSE = """
from daemon.cli import build_parser
parser = build_parser()
for argv in {argvs!r}:
    try:
        parser.parse_args(argv)
    except SystemExit:
        pass
"""


def _loaded_after(argvs: list[list[str]]) -> list[str]:
    return modules_loaded_after(_PARSE.format(argvs=argvs), HEAVY)


def test_help_when_parser_built_then_no_heavy_library_loaded():
    assert _loaded_after([["--help"]]) == []


@pytest.mark.parametrize(
    "command",
    [
        ["run"],
        ["config", "check"],
        ["chart", "render"],
        ["dataset", "build"],
        ["model", "build"],
        ["train", "clip"],
        ["train", "xgb"],
        ["calibrate"],
        ["backtest"],
        ["evaluate"],
        ["ib", "history"],
        ["serve"],
        ["tail"],
    ],
)
def test_subcommand_help_when_parsed_then_no_heavy_library_loaded(command: list[str]):
    assert _loaded_after([[*command, "--help"]]) == []


def test_daemon_and_research_commands_when_loaded_without_ray_flag_then_ray_not_imported():
    """The daemon never needs Ray; evaluate/backtest load it only under --ray (daemon/cluster)."""
    body = """
import daemon.app, daemon.backtest, daemon.config, daemon.training
from pathlib import Path
from daemon.cluster.config import ray_config
from daemon.cluster.run import cluster_run
with cluster_run(ray_config(None, None), bars=Path("bars.parquet"), progress=False) as grid:
    assert grid is None
"""
    assert modules_loaded_after(body, ("ray",)) == []


def test_library_when_scanned_then_no_module_imports_the_cli():
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    offenders = []
    for path in sorted((root / "daemon").rglob("*.py")):
        if "cli" in path.relative_to(root / "daemon").parts[:1]:
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [f"{node.module}.{a.name}" for a in node.names]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            offenders += [
                f"{path.relative_to(root)}:{node.lineno} {n}"
                for n in names
                if n == "daemon.cli" or n.startswith("daemon.cli.")
            ]
    assert offenders == []
