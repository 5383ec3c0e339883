"""Start-up as a trader feels it: process start -> `daemon.ready`, and -> the first ML signal.

Each run starts `vlmtrader run` as a fresh process on an accelerated paper-sim market with a fresh
state directory holding a prebuilt quick bundle (`model bootstrap --quick`, built once per bench),
and reads the times of its JSON log lines against the moment the process was spawned:
  first_log_s    process start -> its first log line (the interpreter and the imports)
  ready_s        process start -> daemon.ready (reconciliation done, trading)
  first_rules_s  process start -> the first batch the rule scorer scored
  swapped_s      process start -> scorer.swapped (auto: the bundle warm and serving)
  first_ml_s     process start -> the first batch the bundle scored (model.inferred, scorer ml)
for scorer.kind rules (no bundle), auto (trades with rules until the bundle is warm) and ml (the
bundle or refuse to start). Each kind repeats until two runs agree within 10% on its ready_s.
With --before OTHER_CHECKOUT (e.g. a detached worktree of main) each kind runs --runs times from
that checkout and from this one, interleaved (before, after, before, ...), and the medians of both
and their ratio are printed: start-up under a loaded machine varies by seconds from run to run, so
only arms measured side by side compare.
Usage: python bench/bench_startup.py [--kinds rules,auto,ml] [--bundle DIR] [--timeout S]
       [--before DIR --runs N]
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
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from harness import Session, load_line

REPO = Path(__file__).resolve().parents[1]
# The shipped paper-sim config's window: the default bundle's features need 64 bars, and a
# shorter window makes the daemon refuse the bundle (bundle.unavailable) and trade on rules.
WINDOW = int(yaml.safe_load((REPO / "config" / "paper-sim.yaml").read_text())["bars"]["window"])
KINDS = ("rules", "auto", "ml")


def build_bundle(out: Path) -> Path:
    """The quick bundle the auto and ml runs load (built by the CLI, as an operator would)."""
    log = out.parent / "bootstrap.log"
    with log.open("wb") as sink:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "daemon.cli",
                "model",
                "bootstrap",
                "--quick",
                "--out",
                str(out),
            ],
            cwd=REPO,
            stdout=sink,
            stderr=subprocess.STDOUT,
            check=True,
        )
    return out


def write_config(state: Path, kind: str) -> Path:
    cfg: dict[str, Any] = {
        "mode": "paper-sim",
        "account": "bench",
        "state_dir": str(state),
        "log": {"level": "info", "format": "json"},
        "feed": {
            "kind": "sim",
            "sim": {
                "speed": 1200,
                "market": {"symbols": [f"SIM{i}" for i in range(4)], "bar_seconds": 60, "seed": 11},
            },
        },
        "bars": {"window": WINDOW, "bar_seconds": 60},
        "scorer": {"kind": kind, "bootstrap": False},
        "journal": {"synchronous": "full"},
    }
    path = state.parent / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _events(log: Path) -> list[dict[str, Any]]:
    out = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(event, dict) and "event" in event and "timestamp" in event:
            out.append(event)
    return out


def _at(events: list[dict[str, Any]], name: str, **fields: object) -> float | None:
    for e in events:
        if e["event"] == name and all(e.get(k) == v for k, v in fields.items()):
            return datetime.fromisoformat(e["timestamp"]).timestamp()
    return None


def start_once(kind: str, bundle: Path, *, timeout: float, repo: Path = REPO) -> dict[str, float]:
    """One daemon process of the checkout at repo, from spawn until it is ready (rules) or has
    scored with the bundle."""
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        state = Path(tmp) / "state"
        state.mkdir()
        if kind != "rules":
            shutil.copytree(bundle, state / "bundles" / "default")
        config = write_config(state, kind)
        log = Path(tmp) / "daemon.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(repo)}
        with log.open("wb") as sink:
            spawned = time.time()
            proc = subprocess.Popen(
                [sys.executable, "-m", "daemon.cli", "run", "--config", str(config)],
                cwd=repo,
                env=env,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
            wanted = ("model.inferred", {"scorer": "rules" if kind == "rules" else "ml"})
            deadline = time.monotonic() + timeout
            try:
                while _at(events := _events(log), wanted[0], **wanted[1]) is None:
                    refused = [e for e in events if e["event"] == "bundle.unavailable"]
                    if (
                        kind != "rules" and refused
                    ):  # the daemon keeps trading on rules: say why now
                        msg = f"{kind}: the daemon refused the bundle: {refused[0].get('error')}"
                        raise RuntimeError(msg)
                    if proc.poll() is not None or time.monotonic() > deadline:
                        tail = log.read_text(errors="replace")[-2000:]
                        msg = f"{kind}: no {wanted[0]} (exit {proc.poll()}):\n{tail}"
                        raise RuntimeError(msg)
                    time.sleep(0.05)
            finally:
                proc.terminate()
                proc.wait(timeout=60)
        events = _events(log)
    figures = {
        "ready_s": _at(events, "daemon.ready"),
        # spawn -> the first log line: the interpreter and the imports before any start-up work
        "first_log_s": datetime.fromisoformat(events[0]["timestamp"]).timestamp(),
    }
    figures["first_rules_s"] = _at(events, "model.inferred", scorer="rules")
    if kind != "rules":
        figures["first_ml_s"] = _at(events, "model.inferred", scorer="ml")
        figures["swapped_s"] = _at(events, "scorer.swapped")
    return {k: round(v - spawned, 3) for k, v in figures.items() if v is not None}


FIGURES = ("first_log_s", "ready_s", "swapped_s", "first_rules_s", "first_ml_s")


def compare(
    kinds: list[str], bundle: Path, before: Path, runs: int, timeout: float
) -> dict[str, float]:
    """Each kind `runs` times from the checkout at before and from this one, interleaved; prints
    every run and the medians, returns {arm_kind_figure: median} and {kind_figure_ratio}."""
    arms = {"before": before.resolve(), "after": REPO}
    got: dict[tuple[str, str], list[dict[str, float]]] = {}
    for i in range(runs):
        for kind in kinds:
            for arm, repo in arms.items():
                run = start_once(kind, bundle, timeout=timeout, repo=repo)
                got.setdefault((arm, kind), []).append(run)
                shown = " ".join(f"{k} {run[k]:.2f}" for k in FIGURES if k in run)
                print(f"# run {i + 1} {kind:<6} {arm:<6} {shown}  {load_line()}", flush=True)
    out: dict[str, float] = {}
    print(f"{'kind':<6} {'figure (median s)':<18} {'before':>8} {'after':>8} {'after/before':>13}")
    for kind in kinds:
        for figure in FIGURES:
            values = {arm: [r[figure] for r in got[(arm, kind)] if figure in r] for arm in arms}
            if not all(values.values()):
                continue
            med = {arm: statistics.median(v) for arm, v in values.items()}
            ratio = med["after"] / med["before"]
            print(
                f"{kind:<6} {figure:<18} {med['before']:>8.2f} {med['after']:>8.2f} {ratio:>13.2f}"
            )
            out |= {
                f"before_{kind}_{figure}": med["before"],
                f"after_{kind}_{figure}": med["after"],
            }
            out[f"{kind}_{figure}_ratio"] = round(ratio, 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument(
        "--bundle", type=Path, help="a prebuilt bundle (default: build a quick one)"
    )
    parser.add_argument("--timeout", type=float, default=180.0)
    parser.add_argument(
        "--before", type=Path, help="another checkout to run interleaved with this one"
    )
    parser.add_argument("--runs", type=int, default=5, help="runs per kind and arm with --before")
    args = parser.parse_args()
    kinds = [k for k in args.kinds.split(",") if k]
    with Session("startup") as bench, tempfile.TemporaryDirectory() as tmp:
        bundle = args.bundle or build_bundle(Path(tmp) / "bundle")
        if args.before is not None:
            bench.add(**compare(kinds, bundle, args.before, args.runs, args.timeout))
            return
        print(
            f"{'scorer.kind':<12} {'ready s':>8} {'swapped s':>10} {'1st rules s':>12} {'1st ML s':>9}"
        )

        def measure(kind: str) -> dict[str, float]:
            got = start_once(kind, bundle, timeout=args.timeout)
            cells = [got.get(k) for k in ("ready_s", "swapped_s", "first_rules_s", "first_ml_s")]
            shown = [f"{c:.2f}" if c is not None else "-" for c in cells]
            print(
                f"{kind:<12} {shown[0]:>8} {shown[1]:>10} {shown[2]:>12} {shown[3]:>9}", flush=True
            )
            return got

        for kind in kinds:
            bench.until_stable(lambda kind=kind: measure(kind), key="ready_s", prefix=f"{kind}_")


if __name__ == "__main__":
    main()
