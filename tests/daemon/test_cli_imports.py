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
