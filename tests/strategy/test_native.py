"""The event core compiled with mypyc (strategy/native.py): the same orders as the Python source, used
by default once `make native` has built it, and never used when a compiled source was edited since.

These tests need the build (`make test` runs `make native` first); without it they fail and say so.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from strategy.native import NATIVE_MODULES, SWITCH

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
from bench_nautilus import write_bars  # noqa: E402  (bench/ is not a package)

_BACKTEST = """
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from bench_nautilus import run_ours
import strategy
result = run_ours(Path(sys.argv[1]), journal=False)
print(json.dumps({**result, **strategy.NATIVE.fields()}))
"""
_IMPORT = """
import json
import strategy, strategy.kernel
print(json.dumps({**strategy.NATIVE.fields(), "kernel_file": strategy.kernel.__file__}))
"""


def _python(code: str, *args: str, root: Path = ROOT, native: bool = True) -> dict[str, Any]:
    """Run code in a fresh interpreter on the tree at root; its last stdout line as JSON."""
    env = {k: v for k, v in os.environ.items() if k != SWITCH}
    env["PYTHONPATH"] = str(root)
    if not native:
        env[SWITCH] = "0"
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=root, env=env, capture_output=True, text=True, check=True, timeout=240,
    )  # fmt: skip
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_backtest_when_core_compiled_then_same_orders_as_python_and_really_compiled(
    tmp_path: Path,
) -> None:
    data = tmp_path / "bars.npz"
    write_bars(data, 3, 6_000)
    compiled = _python(_BACKTEST, str(data), str(ROOT / "bench"))
    pure = _python(_BACKTEST, str(data), str(ROOT / "bench"), native=False)
    assert compiled["active"], f"the compiled core was not used: {compiled['reason']}"
    assert compiled["modules"] == len(NATIVE_MODULES)
    assert not pure["active"]
    assert pure["modules"] == 0
    assert pure["reason"] == f"{SWITCH}=0"
    assert compiled["orders"] > 100
    assert (compiled["orders"], compiled["orders_digest"]) == (
        pure["orders"],
        pure["orders_digest"],
    )


def test_import_when_a_compiled_source_is_edited_then_python_with_the_reason(
    tmp_path: Path,
) -> None:
    for name in ("strategy", "vlm_engine", "build/native"):
        ignore = shutil.ignore_patterns("__pycache__")
        shutil.copytree(ROOT / name, tmp_path / name, ignore=ignore, symlinks=True)
    before = _python(_IMPORT, root=tmp_path)
    assert before["active"], f"the copied build was not used: {before['reason']}"
    assert not before["kernel_file"].endswith(".py")

    source = tmp_path / "strategy" / "kernel.py"
    source.write_text(source.read_text() + "\n# edited after make native\n")
    after = _python(_IMPORT, root=tmp_path)
    assert not after["active"]
    assert after["reason"] == "strategy/kernel.py changed since make native"
    assert after["kernel_file"] == str(source)
