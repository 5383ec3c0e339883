"""The event core as Python against the shipped build compiled with mypyc (`make native`), in one run.

`make native` compiles the core's per-bar modules (strategy.native.NATIVE_MODULES: the bar store,
book, simulated broker, strategy, risk and the kernel; the scorers, the backtest engine and the
value types stay Python) into build/native/, which the strategy package uses while it matches the
sources. This bench runs bench_nautilus.py's own run (`run_ours`) in fresh processes, alternating
(python, native, native, python, ...), on the same bars: the python arm with VLMTRADER_NATIVE=0,
the native arm with the build (each worker reports whether the compiled modules were really the
ones imported; a build out of date is rebuilt first, and a failed build is printed and nothing is
measured):

    python bench/bench_native.py [--bars 200000] [--instruments 1,100] [--data a.npz,b.npz]
        [--pairs 3] [--variants ours,ours_journal]

Printed per bar file and variant: each run's seconds, the orders digests (the same orders from
both arms, or the line says DIFFERENT), and the median over pairs of native / python seconds,
with the load average at start and end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench_nautilus import write_bars
from harness import load_line

from strategy import native

ROOT = Path(__file__).resolve().parent.parent
_WORKER = """
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[3])
from bench_nautilus import run_ours
import strategy
result = run_ours(Path(sys.argv[1]), journal=sys.argv[2] == "ours_journal")
print(json.dumps({**result, **strategy.NATIVE.fields()}))
"""


def run_worker(arm: str, variant: str, data: Path) -> dict[str, Any]:
    """One fresh run of bench_nautilus's run_ours, on the compiled core (native) or not (python)."""
    env = {k: v for k, v in os.environ.items() if k != native.SWITCH}
    env["PYTHONPATH"] = str(ROOT)
    if arm == "python":
        env[native.SWITCH] = "0"
    done = subprocess.run(
        [sys.executable, "-c", _WORKER, str(data), variant, str(ROOT / "bench")],
        cwd=ROOT, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if result["active"] != (arm == "native"):
        msg = (
            f"{arm} arm ran with the compiled core {'on' if result['active'] else 'off'}: {result}"
        )
        raise RuntimeError(msg)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bars", type=int, default=200_000, help="bars per generated file")
    p.add_argument("--instruments", default="1,100", help="one generated file per count")
    p.add_argument("--data", default="", help="bar files (bench_nautilus .npz) instead")
    p.add_argument("--pairs", type=int, default=3, help="python/native pairs per variant")
    p.add_argument("--variants", default="ours,ours_journal")
    args = p.parse_args()
    print(f"# load at start: {load_line()}", flush=True)
    if not native.check(switch=False).active:
        failed = native.build()
        if failed is not None:
            print(f"# {failed}; nothing measured")
            return
    print(f"# compiled with mypyc: {', '.join(native.NATIVE_MODULES)}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        files = [Path(f) for f in args.data.split(",") if f]
        for instruments in (int(x) for x in args.instruments.split(",")) if not files else ():
            files.append(Path(tmp) / f"bars_{instruments}.npz")
            write_bars(files[-1], instruments, args.bars)
        for data in files:
            for variant in args.variants.split(","):
                runs: dict[str, list[dict[str, Any]]] = {"python": [], "native": []}
                for i in range(args.pairs):
                    for arm in ("python", "native") if i % 2 == 0 else ("native", "python"):
                        runs[arm].append(run_worker(arm, variant, data))
                digests = {str(r["orders_digest"]) for arm in runs.values() for r in arm}
                ratio = statistics.median(
                    float(n["seconds"]) / float(o["seconds"])
                    for o, n in zip(runs["python"], runs["native"], strict=True)
                )
                shown = {
                    arm: "/".join(f"{float(r['seconds']):.2f}" for r in rs)
                    for arm, rs in runs.items()
                }
                same = digests.pop() if len(digests) == 1 else "DIFFERENT"
                bars = runs["python"][0]["bars"]
                print(f"{data.name} ({bars:,} bars) {variant:<13} python {shown['python']} s | "
                      f"native {shown['native']} s | native/python {ratio:.3f} | orders {same}",
                      flush=True)  # fmt: skip
    print(f"# load at end: {load_line()}")


if __name__ == "__main__":
    main()
