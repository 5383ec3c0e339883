"""The event core as it is (CPython) against the same source compiled with mypyc, in one run.

mypyc (shipped with mypy, already in the dev venv) compiles type-annotated modules to C extensions
without a change of logic. This bench copies the source tree to a temporary directory, compiles the
core's per-bar modules there (NATIVE_MODULES: the bar store, book, simulated broker, strategy, risk
and the kernel; the bench's SMA scorer, the backtest engine and the value types stay Python), and
runs bench_nautilus.py's own workers from both trees in fresh processes, alternating
(plain, native, native, plain, ...), on the same bars:

    python bench/bench_native.py [--bars 200000] [--instruments 1,100] [--pairs 3]
        [--variants ours,ours_journal]

Printed per instrument count and variant: each run's seconds, the orders digests (the same orders
from both trees, or the line says DIFFERENT), and the median over pairs of native / plain seconds,
with the load average at start and end. Compiling takes ~25 s of one core and needs a C compiler
and the Python headers; when mypyc fails, the reason is printed and nothing is measured.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_nautilus import write_bars
from harness import load_line

ROOT = Path(__file__).resolve().parent.parent
COPIED = ("strategy", "vlm_engine", "daemon", "bench", "pyproject.toml")
NATIVE_MODULES = (
    "strategy/bars.py",
    "strategy/book.py",
    "strategy/sim_broker.py",
    "strategy/target_strategy.py",
    "strategy/kernel.py",
    "strategy/risk.py",
)


def native_tree(into: Path) -> str | None:
    """Copy the source into `into` and compile NATIVE_MODULES there; the reason when it fails."""
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, into / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, into / name)
    mypyc = Path(sys.executable).with_name("mypyc")
    done = subprocess.run(
        [str(mypyc), *NATIVE_MODULES], cwd=into, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        lines = (done.stdout + done.stderr).strip().splitlines()
        return f"mypyc failed: {lines[-1] if lines else done.returncode}"
    return None


def run_worker(tree: Path, variant: str, data: Path) -> dict[str, float | str]:
    """One fresh bench_nautilus.py worker run from this tree (its modules first on the path)."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(
        [sys.executable, str(tree / "bench" / "bench_nautilus.py"), "--worker", variant,
         "--data", str(data)],
        cwd=tree, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    result: dict[str, float | str] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bars", type=int, default=200_000, help="bars per run")
    p.add_argument("--instruments", default="1,100")
    p.add_argument("--pairs", type=int, default=3, help="plain/native pairs per variant")
    p.add_argument("--variants", default="ours,ours_journal")
    args = p.parse_args()
    print(f"# load at start: {load_line()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        native = Path(tmp) / "native"
        native.mkdir()
        failed = native_tree(native)
        if failed is not None:
            print(f"# {failed}; nothing measured")
            return
        print(f"# compiled with mypyc: {', '.join(NATIVE_MODULES)}", flush=True)
        trees = {"plain": ROOT, "native": native}
        for instruments in (int(x) for x in args.instruments.split(",")):
            data = Path(tmp) / f"bars_{instruments}.npz"
            write_bars(data, instruments, args.bars)
            for variant in args.variants.split(","):
                runs: dict[str, list[dict[str, float | str]]] = {"plain": [], "native": []}
                for i in range(args.pairs):
                    for arm in ("plain", "native") if i % 2 == 0 else ("native", "plain"):
                        runs[arm].append(run_worker(trees[arm], variant, data))
                digests = {str(r["orders_digest"]) for arm in runs.values() for r in arm}
                ratio = statistics.median(
                    float(n["seconds"]) / float(o["seconds"])
                    for o, n in zip(runs["plain"], runs["native"], strict=True)
                )
                shown = {
                    arm: "/".join(f"{float(r['seconds']):.2f}" for r in rs)
                    for arm, rs in runs.items()
                }
                same = digests.pop() if len(digests) == 1 else "DIFFERENT"
                print(f"{instruments:>4} {variant:<13} plain {shown['plain']} s | native "
                      f"{shown['native']} s | native/plain {ratio:.3f} | orders {same}",
                      flush=True)  # fmt: skip
    print(f"# load at end: {load_line()}")


if __name__ == "__main__":
    main()
