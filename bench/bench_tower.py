"""CLIP image tower sizes: CPU per chart against what the tower is worth, on the same test rows.

For the 128 px bootstrap default (base128) and each candidate of bench/tower_candidates.py built
into --dir (one bundle per name, `python bench/tower_candidates.py NAME DIR/NAME`; base128 may be
given as --base, a bundle that is only read):

- cost: CPU ms per chart at batch 64 (the calling thread's CPU time; the process's is printed
  beside it as a check that nothing ran elsewhere; one intra-op thread, one worker) of the
  render and of the bundle's ONNX tower, fp32 and dynamic INT8 (the export `model bootstrap` wrote),
  the bundles measured in turn within each round so every ratio comes from one run;
- worth: pattern accuracy (95% Wilson interval) and direction AUC (95% moving-block bootstrap over
  time, block max(20, 4 x horizon) bars, 1,000 resamples, all symbols pooled) on the CLIP test
  split, rebuilt from each bundle's config and checked to be the same (symbol, bar) rows as the
  base128's; the paired differences candidate - base128 (base128s1 for a seed-1 candidate) on
  the same resampled blocks; the
  always-long and always-"none" rates on those rows. Nothing is fitted here: every figure scores
  the bundle's own calibrated outputs on rows its build held out.
- the card's held-out figures of the tabular stage (CLIP, technical XGBoost, fused AUC and the
  base rate on the same held-out bars for every bundle) and the build's CPU seconds when its log
  (DIR/NAME.log, from tower_candidates.py) says them;
- `vlmtrader evaluate --runtime onnx --report DIR/eval_NAME` run on held-out bars for some
  bundles: their clip, technical and fused AUC and the paired differences, from predictions.parquet.

Run: .venv/bin/python bench/bench_tower.py --dir /tmp/tower [--ref NAME] [--base BUNDLE]
[--only NAME ...] [--rounds 7]; --ref pairs every candidate with another than base128 (e.g.
chart96, today's default: --ref chart96 --base BUNDLE of `vlmtrader model bootstrap`).
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from bench_clip import windows
from harness import Session, load_line
from scipy.stats import binomtest
from tower_candidates import CANDIDATES, describe

from daemon.training.export_onnx import rebuild_splits
from vlm_engine.bundle import load_bundle
from vlm_engine.clip.data import ClipSamples
from vlm_engine.infer import InferenceConfig
from vlm_engine.infer.onnx_runtime import OnnxEngine
from vlm_engine.metrics import BootstrapConfig, Interval, block_bootstrap

BATCH = 64


def wilson(hits: int, n: int) -> Interval:
    """The 95% Wilson score interval of a proportion."""
    ci = binomtest(hits, n).proportion_ci(confidence_level=0.95, method="wilson")
    return Interval(value=hits / n, low=float(ci.low), high=float(ci.high))


def engines(path: Path) -> dict[str, OnnxEngine]:
    bundle = load_bundle(path)
    config = InferenceConfig(device="cpu", threads=1, workers=1, warmup_batches=1)
    return {v: OnnxEngine(bundle=bundle, config=config, variant=v) for v in ("fp32", "int8")}  # type: ignore[arg-type]


def cpu_ms(fn: Any, repeats: int) -> tuple[float, float]:
    """(thread, process) CPU ms per call of fn, after one warm call."""
    fn()
    thread, process = time.thread_time(), time.process_time()
    for _ in range(repeats):
        fn()
    return (
        (time.thread_time() - thread) / repeats * 1e3,
        (time.process_time() - process) / repeats * 1e3,
    )


def cost(bundles: dict[str, Path], rounds: int, repeats: int) -> dict[str, dict[str, float]]:
    """Median CPU ms per chart (render, fp32 tower, INT8 tower) over rounds; bundles in turn."""
    loaded = {name: engines(path) for name, path in bundles.items()}
    samples: dict[str, dict[str, list[float]]] = {
        n: {
            k: []
            for k in ("render", "fp32", "int8", "render_process", "fp32_process", "int8_process")
        }
        for n in bundles
    }
    for r in range(rounds):
        for name, pair in loaded.items():
            measure_once(pair, samples[name], r, repeats)
        print(f"  cost round {r + 1}/{rounds}: {load_line()}", flush=True)
    return {n: {k: float(np.median(v)) for k, v in s.items()} for n, s in samples.items()}


def measure_once(
    pair: dict[str, OnnxEngine], into: dict[str, list[float]], seed: int, repeats: int
) -> None:
    """One round of one bundle: render, then each tower variant on the rendered charts."""
    fp32 = pair["fp32"]
    ws = windows(BATCH, fp32.spec.bars_needed, seed=seed)
    images = fp32.render(ws)
    thread, process = cpu_ms(lambda: fp32.render(ws), repeats)
    into["render"].append(thread / BATCH)
    into["render_process"].append(process / BATCH)
    for variant, engine in pair.items():
        thread, process = cpu_ms(lambda e=engine: e.embed(images), repeats)
        into[variant].append(thread / BATCH)
        into[f"{variant}_process"].append(process / BATCH)


class Scored:
    """One bundle's calibrated outputs on its CLIP test split."""

    def __init__(self, path: Path, name: str) -> None:
        engine = engines(path)["fp32"]
        test: ClipSamples = rebuild_splits(
            engine.bundle.card, where=path, configs=[CANDIDATES[name]]
        )["test"]
        if test.origins is None:
            msg = f"{path}: its test split carries no origins (symbol, time)"
            raise SystemExit(msg)
        self.rows = list(zip(test.origins.symbols, test.origins.ts.tolist(), strict=True))
        self.ts = test.origins.ts
        self.horizon = test.origins.horizon
        batch = engine.score_images(test.images)
        index = {c: i for i, c in enumerate(batch.classes)}
        self.labels = np.array([index.get(p, -1) for p in test.patterns], dtype=np.int64)
        self.none_index = index.get("none", -1)
        self.hit = batch.pattern_probs.argmax(axis=1) == self.labels
        self.direction = test.direction
        self.p_up = batch.p_up.astype(np.float64)
        self.metrics = engine.bundle.card.metrics


def accuracy_difference(
    ts: npt.NDArray[np.int64],
    a: npt.NDArray[np.bool_],
    b: npt.NDArray[np.bool_],
    cfg: BootstrapConfig,
    block: int,
) -> Interval:
    """Paired 95% interval of accuracy(a) - accuracy(b) by the moving-block scheme of block_bootstrap."""
    times, index = np.unique(ts, return_inverse=True)
    n = times.shape[0]
    block = max(1, min(block, n))
    rng = np.random.default_rng(cfg.seed)
    diff = a.astype(np.float64) - b.astype(np.float64)
    draws = np.empty(cfg.resamples)
    for r in range(cfg.resamples):
        starts = rng.integers(0, n - block + 1, size=-(-n // block))
        drawn = (starts[:, None] + np.arange(block)).ravel()[:n]
        w = np.bincount(drawn, minlength=n).astype(np.float64)[index]
        draws[r] = float(w @ diff / w.sum())
    low, high = np.percentile(draws, [2.5, 97.5])
    return Interval(value=float(diff.mean()), low=float(low), high=float(high))


def reference(name: str, names: Any, base: str) -> str:
    """What `name` is paired with: the base trained with the same seed (e.g. base128s1 for a *s1
    candidate, when built), else the base."""
    if name.endswith("s1") and name != f"{base}s1" and f"{base}s1" in names:
        return f"{base}s1"
    return base


def evaluated(directory: Path, names: list[str], base: str) -> None:
    """Paired AUC differences candidate - base of `vlmtrader evaluate`'s models (fused, clip) on
    the same rows, from DIR/eval_NAME/predictions.parquet where both exist (evaluate --report)."""
    import pandas as pd

    files = {n: directory / f"eval_{n}" / "predictions.parquet" for n in names}
    files = {n: f for n, f in files.items() if f.exists()}
    if base not in files or len(files) < 2:
        return
    frames = {
        n: pd.read_parquet(f).sort_values(["ts", "symbol"], kind="stable") for n, f in files.items()
    }
    print(
        f"\n  vlmtrader evaluate on the held-out bars (walk-forward), paired with {base} of its seed:"
    )
    for name, frame in frames.items():
        ref = reference(name, frames, base)
        ref_frame = frames[ref]
        ts = ref_frame["ts"].astype("int64").to_numpy() // 10**9
        same = frame[["symbol", "ts", "y"]].reset_index(drop=True)
        if not same.equals(ref_frame[["symbol", "ts", "y"]].reset_index(drop=True)):
            raise SystemExit(f"eval_{name}: its rows differ from eval_{ref}'s")
        probs = {
            f"{m}_{n}": f[f"p_{m}"].to_numpy()
            for n, f in ((name, frame), (ref, ref_frame))
            for m in ("fused", "clip", "xgb_technical")
        }
        boot = block_bootstrap(
            ts,
            ref_frame["y"].to_numpy(),
            probs,
            block_bars=20,
            config=BootstrapConfig(resamples=1000),
            pairs=[(f"{m}_{name}", f"{m}_{ref}") for m in ("fused", "clip")] if name != ref else [],
        )
        print(
            f"  {name:10} {len(ref_frame)} rows  fused {fmt(boot.auc[f'fused_{name}'], 4)}  "
            f"clip {fmt(boot.auc[f'clip_{name}'], 4)}  technical {fmt(boot.auc[f'xgb_technical_{name}'], 4)}"
            + (
                ""
                if name == ref
                else f"  fused - {ref} {fmt(boot.differences[f'fused_{name} - fused_{ref}'], 4)}  "
                f"clip - {ref} {fmt(boot.differences[f'clip_{name} - clip_{ref}'], 4)}"
            )
        )


def build_cpu(log: Path) -> str:
    """'CPU s (wall s)' of the build from tower_candidates.py's log, '?' when it has none."""
    if not log.exists():
        return "?"
    found = re.search(r"bootstrap wall ([\d.]+) s, process CPU ([\d.]+) s", log.read_text())
    return f"{found.group(2)} ({found.group(1)})" if found else "?"


def fmt(i: Interval, digits: int = 3) -> str:
    return f"{i.value:.{digits}f} [{i.low:.{digits}f}, {i.high:.{digits}f}]"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--dir", type=Path, required=True, help="bundles DIR/NAME, logs DIR/NAME.log"
    )
    parser.add_argument(
        "--ref",
        default="base128",
        choices=sorted(CANDIDATES),
        help="the candidate every other is paired with (default base128)",
    )
    parser.add_argument("--base", type=Path, help="the --ref bundle, only read (else DIR/REF)")
    parser.add_argument(
        "--only",
        nargs="+",
        help="candidates to compare with --ref (default: every one built in DIR)",
    )
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    ref_name: str = args.ref
    bundles = {ref_name: args.base or args.dir / ref_name}
    bundles.update(
        {
            n: args.dir / n
            for n in CANDIDATES
            if n != ref_name
            and (args.only is None or n in args.only)
            and (args.dir / n / "model_card.json").exists()
        }
    )
    with Session("tower") as bench:
        for name in bundles:
            print(f"  {name}: {describe(CANDIDATES[name])}")
        ms = cost(bundles, args.rounds, args.repeats)
        scored = {name: Scored(path, name) for name, path in bundles.items()}
        base = scored[ref_name]
        for name, s in scored.items():
            if s.rows != base.rows:
                raise SystemExit(f"{name}: its test rows differ from {ref_name}'s")
        moving = base.direction != 0
        up = base.direction[moving] > 0
        cfg = BootstrapConfig(resamples=1000, seed=0)
        block = cfg.block_for(base.horizon)
        boot = block_bootstrap(
            base.ts[moving],
            up,
            {n: s.p_up[moving] for n, s in scored.items()},
            block_bars=block,
            config=cfg,
            pairs=[
                (n, reference(n, scored, ref_name))
                for n in scored
                if n != reference(n, scored, ref_name)
            ],
        )
        labelled = base.labels >= 0
        print(
            f"\n  CLIP test split: {len(base.rows)} charts, {int(labelled.sum())} labelled, "
            f"{int(moving.sum())} moving; always-long hit rate {up.mean():.3f} (AUC 0.5), "
            f"always-'none' accuracy {(base.labels[labelled] == base.none_index).mean():.3f}; "
            f"AUC block {boot.block_bars} bars x {boot.resamples} resamples"
        )
        d = ms[ref_name]
        print(
            f"\n  {'candidate':10} CPU ms/chart thread: render fp32 int8 | process: render fp32 int8 | x base fp32 int8"
        )
        for name, m in ms.items():
            print(
                f"  {name:10} {m['render']:.4f} {m['fp32']:.4f} {m['int8']:.4f} | "
                f"{m['render_process']:.4f} {m['fp32_process']:.4f} {m['int8_process']:.4f} | "
                f"{(d['render'] + d['fp32']) / (m['render'] + m['fp32']):.2f} "
                f"{(d['render'] + d['int8']) / (m['render'] + m['int8']):.2f}"
            )
        print(
            f"\n  {'candidate':10} {'render':>6} {'fp32':>6} {'int8':>6} {'r+int8':>7} {'x base':>6}  "
            f"{'pattern accuracy [95%]':24} {'acc - base (same seed)':26} {'direction AUC [95%]':22} "
            f"{'AUC - base (same seed)':28} {'holdout clip/tech/fused':24} build CPU s (wall)"
        )
        for name, s in scored.items():
            m = ms[name]
            total = m["render"] + m["int8"]
            acc = wilson(int(s.hit[labelled].sum()), int(labelled.sum()))
            ref = reference(name, scored, ref_name)
            acc_d = accuracy_difference(
                base.ts[labelled], s.hit[labelled], scored[ref].hit[labelled], cfg, block
            )
            auc_i = boot.auc[name]
            auc_d = boot.differences.get(f"{name} - {ref}")
            h = s.metrics
            print(
                f"  {name:10} {m['render']:6.4f} {m['fp32']:6.4f} {m['int8']:6.4f} {total:7.4f} "
                f"{(d['render'] + d['int8']) / total:6.2f}  {fmt(acc):24} "
                f"{fmt(acc_d, 4) if name != ref else '':26} {fmt(auc_i):22} "
                f"{fmt(auc_d, 4) if auc_d else '':28} "
                f"{h['clip_holdout_auc']:.3f}/{h['xgb_technical_holdout_auc']:.3f}/{h['fused_holdout_auc']:.3f}"
                f"{'':6} {build_cpu(args.dir / f'{name}.log')}"
            )
            bench.add(
                f"{name}_",
                render_ms=m["render"],
                fp32_ms=m["fp32"],
                int8_ms=m["int8"],
                speedup=(d["render"] + d["int8"]) / total,
                pattern_accuracy=acc.value,
                direction_auc=auc_i.value,
                card_direction_auc=h["direction_auc"],
                fused_holdout_auc=h["fused_holdout_auc"],
            )
        evaluated(args.dir, list(bundles), ref_name)
        print(
            f"\n  ms = CPU ms per chart at batch {BATCH}; x base = {ref_name}'s (render + int8) over the "
            f"candidate's; holdout = the card's AUC on its {int(base.metrics['holdout_rows'])} held-out "
            f"bars (base rate {base.metrics['holdout_base_rate']:.3f})"
        )


if __name__ == "__main__":
    main()
