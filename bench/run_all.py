"""`make bench`: run every bench, collect their figures into one JSON for bench/compare.py.

Each bench runs as its own process (one failing does not stop the others; the exit status says
it failed) and appends its figures to a results file through bench/harness.py; this script writes
them, with the commit, the machine and the load average at start and end, to one JSON file
(default build/bench/<commit>.json). --quick (`make bench-quick`) runs the fast benches with
smaller sizes and at most two repeats: a check that every bench still runs, in a few minutes.
    python bench/run_all.py [--quick] [--out PATH] [--only journal,pipeline]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from harness import QUICK_ENV, RESULTS_ENV, load_average, load_line

from daemon.cli.model import DEFAULT_OUT

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
DEFAULT_BUNDLE = REPO / DEFAULT_OUT  # where `vlmtrader model bootstrap` writes it
# A bench run by another bench's script (with other arguments), by name; the rest: bench_<name>.py.
SCRIPTS = {"clip_default": "clip"}
# What a bench needs that `make bench` does not build: without it the bench is not run, and says so.
NEEDS = {"clip_default": (DEFAULT_BUNDLE, "run `vlmtrader model bootstrap` to build it")}
# name -> extra arguments; the quick set is the one that needs no model bundle.
FULL: dict[str, list[str]] = {
    "journal": [],
    "pipeline": [],
    "backtest": [],
    "render": [],
    "dataset": [],
    "clip": ["--variants"],  # torch, fp32, dynamic and static INT8 side by side
    # The default bundle the daemon serves (`vlmtrader model bootstrap`), when it is built: its
    # small tower is what a trader's charts go through; bench_clip's own bundle is the larger
    # library-default tower (run by the line above).
    "clip_default": ["--bundle", str(DEFAULT_BUNDLE), "--session", "clip_default"],
    "ml_pipeline": [],
    "ml_auc": [],
    "evaluate": [],
    "model_build": ["--quick"],  # the full-size build is ~10 minutes a dataset: run it by hand
    "startup": [],
    "nautilus": [],  # NautilusTrader from its scratch venv; says so when it is not installed
    "dashboard": [],
    "explain": [],
    "search": [],  # builds its own small bundle from the simulator (a few minutes)
    "ray": [],  # skipped, with the reason, when the ray extra is not installed
}
QUICK: dict[str, list[str]] = {
    "journal": [],
    "pipeline": [],
    "backtest": [],
    "render": ["--quick"],
    "dataset": [],
    "nautilus": [],  # 100k bars under --quick
}


def commit() -> str:
    """Short commit id, with -dirty when the work tree has changes."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    head = git("rev-parse", "--short=12", "HEAD") or "unknown"
    return head + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def not_runnable(name: str, needs: dict[str, tuple[Path, str]] = NEEDS) -> str | None:
    """Why a bench cannot run here (what it needs is missing), or None when it can."""
    needed = needs.get(name)
    if needed is None or needed[0].exists():
        return None
    return f"no {needed[0]} ({needed[1]})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, help="default: build/bench/<commit>.json")
    parser.add_argument("--only", help="comma-separated bench names (journal, pipeline, ...)")
    args = parser.parse_args()
    table = QUICK if args.quick else FULL
    names = args.only.split(",") if args.only else list(table)
    unknown = [n for n in names if n not in FULL]
    if unknown:
        parser.error(f"unknown bench {', '.join(unknown)}; benches: {', '.join(FULL)}")
    revision = commit()
    out = args.out or REPO / "build" / "bench" / f"{revision}{'-quick' if args.quick else ''}.json"
    print(f"# benches {', '.join(names)} at {revision}: {load_line()}", flush=True)
    load_start, started = load_average(), time.perf_counter()
    failed: list[str] = []
    with tempfile.NamedTemporaryFile("r", suffix=".jsonl") as results:
        env = {**os.environ, RESULTS_ENV: results.name, QUICK_ENV: "1" if args.quick else "0"}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
        for name in names:
            script = BENCH_DIR / f"bench_{SCRIPTS.get(name, name)}.py"
            print(f"== {name}: {script.relative_to(REPO)}", flush=True)
            why = not_runnable(name)
            if why is not None:
                print(f"# {name} not run: {why}")
                continue
            extra = table.get(name, FULL[name])
            code = subprocess.run(
                [sys.executable, str(script), *extra], cwd=REPO, env=env
            ).returncode
            if code != 0:
                print(f"# {name} failed (exit {code})", flush=True)
                failed.append(name)
        benches = {}
        for line in Path(results.name).read_text().splitlines():
            record = json.loads(line)
            benches[record.pop("bench")] = record
    doc = {
        "commit": revision,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "python": platform.python_version(),
        "load_start": load_start,
        "load_end": load_average(),
        "seconds": round(time.perf_counter() - started, 1),
        "failed": failed,
        "benches": benches,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    print(f"# figures of {len(benches)} benches in {out}; {load_line()}")
    if failed:
        print(f"# failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
