"""Start-up as a trader feels it: process start -> `daemon.ready`, and -> the first ML signal.

Each run starts `vlmtrader run` as a fresh process on an accelerated paper-sim market with a fresh
state directory holding a prebuilt quick bundle (`model bootstrap --quick`, built once per bench),
and reads the times of its JSON log lines against the moment the process was spawned:
  ready_s        process start -> daemon.ready (reconciliation done, trading)
  swapped_s      process start -> scorer.swapped (auto: the bundle warm and serving)
  first_ml_s     process start -> the first batch the bundle scored (model.inferred, scorer ml)
for scorer.kind rules (no bundle), auto (trades with rules until the bundle is warm) and ml (the
bundle or refuse to start). Each kind repeats until two runs agree within 10% on its ready_s.
Usage: python bench/bench_startup.py [--kinds rules,auto,ml] [--bundle DIR] [--timeout S]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from harness import Session

REPO = Path(__file__).resolve().parents[1]
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
        "bars": {"window": 32, "bar_seconds": 60},
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


def start_once(kind: str, bundle: Path, *, timeout: float) -> dict[str, float]:
    """One daemon process from spawn until it is ready (rules) or has scored with the bundle."""
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        state = Path(tmp) / "state"
        state.mkdir()
        if kind != "rules":
            shutil.copytree(bundle, state / "bundles" / "default")
        config = write_config(state, kind)
        log = Path(tmp) / "daemon.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with log.open("wb") as sink:
            spawned = time.time()
            proc = subprocess.Popen(
                [sys.executable, "-m", "daemon.cli", "run", "--config", str(config)],
                cwd=REPO,
                env=env,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
            wanted = (
                ("daemon.ready", {}) if kind == "rules" else ("model.inferred", {"scorer": "ml"})
            )
            deadline = time.monotonic() + timeout
            try:
                while _at(_events(log), wanted[0], **wanted[1]) is None:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        tail = log.read_text(errors="replace")[-2000:]
                        msg = f"{kind}: no {wanted[0]} (exit {proc.poll()}):\n{tail}"
                        raise RuntimeError(msg)
                    time.sleep(0.05)
            finally:
                proc.terminate()
                proc.wait(timeout=60)
        events = _events(log)
    figures = {"ready_s": _at(events, "daemon.ready")}
    if kind != "rules":
        figures["first_ml_s"] = _at(events, "model.inferred", scorer="ml")
        figures["first_rules_s"] = _at(events, "model.inferred", scorer="rules")
        figures["swapped_s"] = _at(events, "scorer.swapped")
    return {k: round(v - spawned, 3) for k, v in figures.items() if v is not None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument(
        "--bundle", type=Path, help="a prebuilt bundle (default: build a quick one)"
    )
    parser.add_argument("--timeout", type=float, default=180.0)
    args = parser.parse_args()
    kinds = [k for k in args.kinds.split(",") if k]
    with Session("startup") as bench, tempfile.TemporaryDirectory() as tmp:
        bundle = args.bundle or build_bundle(Path(tmp) / "bundle")
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
