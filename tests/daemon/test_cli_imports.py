"""The command line loads its heavy libraries only in the subcommand that runs (fast `--help`)."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("torch", "transformers", "xgboost", "pandas", "mplfinance", "matplotlib", "ib_async")

_PROBE = """
import sys
from daemon.cli import build_parser
parser = build_parser()
for argv in {argvs!r}:
    try:
        parser.parse_args(argv)
    except SystemExit:
        pass
print("loaded:" + ",".join(m for m in {heavy!r} if m in sys.modules))
"""


def _loaded_after(argvs: list[list[str]]) -> list[str]:
    code = _PROBE.format(argvs=argvs, heavy=HEAVY)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    line = next(x for x in out.splitlines() if x.startswith("loaded:"))
    return [m for m in line.removeprefix("loaded:").split(",") if m]


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
