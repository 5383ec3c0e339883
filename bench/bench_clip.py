"""CLIP serving and training speed: charts/s at batch 64 (render + score), single-chart p50/p99, training samples/s.

Baseline measured in the same run: render alone (the engine's floor without the model).
With --sizes it also trains 2-3 model sizes briefly on the bootstrap data and prints an
accuracy-vs-latency table. Goals (issue 4): >= 300 charts/s at batch 64, p99 <= 15 ms per chart.
Threads default to 1: the model is small, and on a busy 2-core machine two OpenMP threads
spend most of their time spin-waiting for each other (measured 5x slower).
With --runtimes (default torch,auto) each CLIP runtime is served in the same run (issue 16 goal:
>= 5,000 charts/s at batch 64 with the runtime auto picks, at parity).
With --variants the bundle's image tower is compared as torch, ONNX fp32, dynamic INT8 (how
bundles were exported before; quantized here from the bundle's fp32 file) and static INT8 (the
bundle's own when static, else quantized here on its parity charts, marked so), alternated in
rounds in one process: charts/s at batch 64, CPU ms per chart (all threads), the ratio to fp32,
parity figures on the bundle's parity charts (a sample of its test split; the card's figures on
the whole split beside them) and whether a chart scores the same alone and in a batch of 64.
Usage: python bench/bench_clip.py [--bundle DIR] [--seconds S] [--sizes] [--threads N]
       [--runtimes torch,auto] [--variants] [--session NAME]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import msgspec
import numpy as np
import torch
from harness import Session

from daemon.training import BootstrapConfig, quick_config
from daemon.training.clip import train_bundle
from strategy.market_sim import simulate_frame
from vlm_engine.bundle import DatasetRef
from vlm_engine.clip import ClipModelConfig
from vlm_engine.clip.quickset import samples_from_bars
from vlm_engine.infer import ChartEngine, InferenceConfig, load_engine
from vlm_engine.infer.onnx_bundle import export_to_bundle
from vlm_engine.render import ChartWindow

SIZES = {
    "default (w64, 2+1 layers)": ClipModelConfig(),
    "small (w64, 4+2 layers)": ClipModelConfig(vision_layers=4, text_layers=2),
    "wide (w128, 4+2 layers)": ClipModelConfig(
        vision_width=128, vision_layers=4, text_width=128, text_layers=2, projection_dim=128
    ),
}


def windows(n: int, need: int, seed: int = 0) -> list[ChartWindow]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        close = 100 * np.exp(np.cumsum(rng.normal(0, 0.002, need)))
        open_ = np.r_[close[0], close[:-1]]
        out.append(
            ChartWindow(
                symbol=f"S{i}",
                bar_seconds=60,
                timestamps=60 * np.arange(1, need + 1, dtype=np.int64),
                open=open_,
                high=np.maximum(open_, close) * 1.001,
                low=np.minimum(open_, close) * 0.999,
                close=close,
                volume=rng.uniform(100, 1000, need),
            )
        )
    return out


def timed(fn, seconds: float) -> tuple[list[float], float]:
    """Wall times of repeated calls, and the mean CPU seconds per call (less sensitive to other load)."""
    times = []
    cpu = time.process_time()
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < 5:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times, (time.process_time() - cpu) / len(times)


def serve(bundle: Path, seconds: float, runtime: str = "torch") -> dict[str, float]:
    engine = load_engine(bundle, config=InferenceConfig(device="auto", runtime=runtime))  # type: ignore[arg-type]
    print(f"   {runtime}: serving on {engine.runtime}", flush=True)
    batch = windows(64, engine.spec.bars_needed)
    one = batch[:1]
    load_before = os.getloadavg()[0]
    render, render_cpu = timed(lambda: engine.render(batch), seconds)
    images = engine.render(batch)
    _, tower_cpu = timed(lambda: engine.score_images(images), seconds / 2)
    embeddings = engine.score_images(images).embeddings
    _, readout_cpu = timed(lambda: engine.read_out(embeddings), seconds / 4)
    full, full_cpu = timed(lambda: engine.score_batch(batch), seconds)
    single, single_cpu = timed(lambda: engine.score_batch(one), seconds)
    return {
        "render_charts_per_s": 64 / float(np.median(render)),
        "charts_per_s": 64 / float(np.median(full)),
        "cpu_ms_per_chart": 1e3 * full_cpu / 64,
        # where the CPU goes per chart: drawing, the image tower (+ read-out), the read-out alone
        "render_cpu_ms": 1e3 * render_cpu / 64,
        "tower_cpu_ms": 1e3 * (tower_cpu - readout_cpu) / 64,
        "readout_cpu_ms": 1e3 * readout_cpu / 64,
        # what the cores could do if the machine were idle: cores / CPU seconds per chart
        "idle_cores_charts_per_s": (os.cpu_count() or 1) * 64 / full_cpu,
        "single_cpu_ms": 1e3 * single_cpu,
        "single_p50_ms": 1e3 * float(np.percentile(single, 50)),
        "single_p99_ms": 1e3 * float(np.percentile(single, 99)),
        "load": max(load_before, os.getloadavg()[0]),
    }


def _variant_models(bundle: Path) -> dict[str, bytes]:
    """The ONNX towers to compare: the bundle's fp32, dynamic INT8 of it, and static INT8."""
    from vlm_engine.bundle import load_bundle
    from vlm_engine.infer.onnx_export import (
        FP32_FILE,
        INT8_FILE,
        QUANT_PLANS,
        quantize_dynamic_int8,
        quantize_int8,
    )
    from vlm_engine.infer.runtime_choice import int8_quantization, read_parity

    loaded = load_bundle(bundle)
    fp32 = (bundle / FP32_FILE).read_bytes()
    models = {"onnx fp32": fp32, "dynamic INT8": quantize_dynamic_int8(fp32)}
    if INT8_FILE in loaded.card.files and int8_quantization(loaded) == "static":
        models["static INT8"] = (bundle / INT8_FILE).read_bytes()
    else:  # no training split at hand: calibrated on the parity charts, for speed figures only
        charts = read_parity(loaded).images
        models["static INT8 (bench-calibrated)"] = quantize_int8(fp32, charts, QUANT_PLANS[0])
    return models


def _variant_engines(bundle: Path, models: dict[str, bytes]) -> dict[str, ChartEngine]:
    """torch and an ONNX engine per model, one worker each."""
    from vlm_engine.bundle import load_bundle
    from vlm_engine.infer import InferenceEngine
    from vlm_engine.infer.onnx_runtime import OnnxEngine

    loaded = load_bundle(bundle)
    config = InferenceConfig(device="cpu", threads=1, workers=1, warmup_batches=1)
    engines: dict[str, ChartEngine] = {"torch": InferenceEngine(bundle=loaded, config=config)}
    for name, model in models.items():
        variant = "fp32" if name == "onnx fp32" else "int8"
        engines[name] = OnnxEngine(bundle=loaded, config=config, variant=variant, model=model)
    return engines


def op_profile(model: bytes, images: np.ndarray, runs: int = 20) -> list[tuple[str, float]]:
    """Share of the ONNX session's kernel time per op type (onnxruntime's own profiler), after
    the graph optimizations a served session gets."""
    import json

    import onnxruntime as ort

    from vlm_engine.infer.onnx_runtime import session_options

    options = session_options(1)
    options.enable_profiling = True
    options.profile_file_prefix = str(Path(tempfile.mkdtemp(prefix="bench_clip_prof_")) / "ort")
    session = ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
    for _ in range(runs):
        session.run(None, {"images": images})
    trace = Path(session.end_profiling())
    by_op: dict[str, float] = {}
    for event in json.loads(trace.read_text()):
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            op = event["args"]["op_name"]
            by_op[op] = by_op.get(op, 0.0) + event["dur"]
    trace.unlink()
    total = sum(by_op.values()) or 1.0
    return sorted(((op, t / total) for op, t in by_op.items()), key=lambda x: -x[1])


def print_op_profiles(bundle: Path) -> None:
    """Where the tower's time goes per op type: fp32, dynamic and static INT8 (see op_profile)."""
    from vlm_engine.bundle import load_bundle
    from vlm_engine.infer.runtime_choice import read_parity

    images = read_parity(load_bundle(bundle)).images[:64]
    models = _variant_models(bundle)
    print(f"\n-- kernel time per op type, batch 64 ({os.getloadavg()[0]:.2f} load)")
    for name, model in models.items():
        shares = "  ".join(f"{op} {share:.0%}" for op, share in op_profile(model, images)[:10])
        print(f"{name:<32} {shares}")


def compare_variants(bundle: Path, seconds: float) -> dict[str, float]:
    """One run of the --variants table (see the module doc); returns its figures."""
    from vlm_engine.bundle import load_bundle
    from vlm_engine.infer.runtime_choice import figures as parity_figures
    from vlm_engine.infer.runtime_choice import read_parity

    engines = _variant_engines(bundle, _variant_models(bundle))
    charts = read_parity(load_bundle(bundle))
    batch = windows(64, next(iter(engines.values())).spec.bars_needed)
    load_before = os.getloadavg()[0]
    wall = dict.fromkeys(engines, 0.0)
    cpu = dict.fromkeys(engines, 0.0)
    calls = dict.fromkeys(engines, 0)
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or min(calls.values()) < 5:
        for name, engine in engines.items():  # alternated: each round sees the same load
            w, c = time.perf_counter(), time.process_time()
            engine.score_batch(batch)
            wall[name] += time.perf_counter() - w
            cpu[name] += time.process_time() - c
            calls[name] += 1
    load = max(load_before, os.getloadavg()[0])
    stage = load_bundle(bundle).card.stages.get("onnx", {})
    print(
        f"\n-- image tower variants of {bundle} (batch 64, one worker, load {load:.2f} on {os.cpu_count()} cores)"
    )
    print(
        f"{'variant':<32} {'charts/s':>9} {'CPU ms/chart':>13} {'vs fp32':>8} {'pattern acc':>12} {'dir AUC':>8} {'alone == in 64':>15}"
    )
    out: dict[str, float] = {"load": load}
    fp32_cpu = cpu["onnx fp32"] / calls["onnx fp32"]
    for name, engine in engines.items():
        per_call = cpu[name] / calls[name]
        acc, auc_value = parity_figures(engine.score_images(charts.images), charts)
        one = engine.score_images(charts.images[3:4]).embeddings[0]
        same = bool(np.array_equal(one, engine.score_images(charts.images[:64]).embeddings[3]))
        print(
            f"{name:<32} {64 * calls[name] / wall[name]:>9.0f} {1e3 * per_call / 64:>13.4f} "
            f"{per_call / fp32_cpu:>8.3f} {acc:>12.4f} {auc_value:>8.4f} {same!s:>15}"
        )
        key = name.split(" (")[0].replace(" ", "_").lower()
        out |= {
            f"{key}_charts_per_s": 64 * calls[name] / wall[name],
            f"{key}_cpu_ms_per_chart": 1e3 * per_call / 64,
            f"{key}_cpu_vs_fp32": per_call / fp32_cpu,
        }
    int8 = (
        f"INT8 {stage.get('quantization', 'dynamic')}"
        if "int8" in stage.get("variants", ["int8"])
        else f"INT8 not written: {stage.get('refused', {}).get('onnx-int8')}"
    )
    print(
        f"on the whole test split (the card's onnx stage, {stage.get('test_charts')} charts, {int8}): {stage.get('parity')}"
    )
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument(
        "--bundle", type=Path, help="bundle to serve (default: a quick bootstrap bundle)"
    )
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--sizes", action="store_true", help="train and compare model sizes (minutes)")
    p.add_argument("--epochs", type=int, default=14)
    p.add_argument(
        "--runtimes", default="torch,auto", help="CLIP runtimes: torch, onnx, onnx-int8, auto"
    )
    p.add_argument(
        "--variants",
        action="store_true",
        help="compare torch, ONNX fp32, dynamic and static INT8 of --bundle in one run",
    )
    p.add_argument(
        "--session", default="clip", help="the name its figures go under in `make bench`'s JSON"
    )
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="bench_clip_"))

    boot = BootstrapConfig()
    if args.bundle is None:
        cfg = msgspec.structs.replace(
            quick_config(),
            spec=boot.spec,
            train=msgspec.structs.replace(quick_config().train, model=ClipModelConfig()),
        )
        frame = simulate_frame(cfg.market, datetime_start(), cfg.bars)
        splits = samples_from_bars(frame, cfg.spec, cfg.samples)
        train_bundle(
            splits=splits,
            spec=cfg.spec,
            dataset=DatasetRef(source="bench", manifest_hash="-"),
            cfg=cfg.train,
            out=tmp / "default",
            device="cpu",
        )
        # the ONNX export `model build` adds (INT8 calibrated on the training split)
        export_to_bundle(tmp / "default", train=splits["train"], test=splits["test"])
        args.bundle = tmp / "default"
    print(
        f"bundle {args.bundle}  threads {args.threads}  device {'cuda' if torch.cuda.is_available() else 'cpu'}"
    )
    with Session(args.session) as bench:
        if args.variants and not (args.bundle / "onnx").is_dir():
            print(f"--variants: {args.bundle} has no ONNX export (`vlmtrader model export-onnx`)")
        elif args.variants:
            print_op_profiles(args.bundle)
            bench.until_stable(
                lambda: compare_variants(args.bundle, args.seconds),
                key="static_int8_cpu_vs_fp32",
                prefix="variants_",
            )
        for runtime in args.runtimes.split(","):
            figures = bench.until_stable(
                lambda r=runtime: serve(args.bundle, args.seconds, r),
                key="charts_per_s",
                prefix=f"{runtime}_",
            )
            print(f"\n-- runtime {runtime}")
            print(
                f"1-min load average:         {figures['load']:8.2f} on {os.cpu_count()} cores (figures below are wall time; busy machines read slow)"
            )
            print(f"render only (baseline):     {figures['render_charts_per_s']:8.0f} charts/s")
            print(
                f"render + score, batch 64:   {figures['charts_per_s']:8.0f} charts/s  (goal >= 5,000; ratio to render-only {figures['charts_per_s'] / figures['render_charts_per_s']:.3f})"
            )
            print(
                f"CPU time per chart:         {figures['cpu_ms_per_chart']:8.3f} ms  (all threads, batch 64): "
                f"render {figures['render_cpu_ms']:.3f}, image tower {figures['tower_cpu_ms']:.3f}, "
                f"read-out {figures['readout_cpu_ms']:.4f}"
            )
            print(
                f"on {os.cpu_count()} idle cores:          {figures['idle_cores_charts_per_s']:8.0f} charts/s  "
                "(cores / CPU time per chart: what the wall figure reads when nothing else runs)"
            )
            print(
                f"single chart p50 / p99:     {figures['single_p50_ms']:8.2f} / {figures['single_p99_ms']:.2f} ms  (goal p99 <= 15 ms; CPU {figures['single_cpu_ms']:.2f} ms)"
            )

    if args.sizes:
        frame = simulate_frame(boot.market, datetime_start(), boot.bars)
        splits = samples_from_bars(frame, boot.spec, boot.samples)
        print(
            f"\nsize trade-off ({len(splits['train'])} train charts, {args.epochs} epochs, spec {boot.spec.spec_hash()})"
        )
        print(
            f"{'model':<28} {'params':>9} {'train s/s':>10} {'acc':>6} {'F1':>6} {'ECE after':>9} {'charts/s':>9} {'p99 ms':>7}"
        )
        for name, model in SIZES.items():
            train_cfg = msgspec.structs.replace(boot.train, model=model, epochs=args.epochs)
            t = time.perf_counter()
            card = train_bundle(
                splits=splits,
                spec=boot.spec,
                dataset=DatasetRef(source="bench", manifest_hash="-"),
                cfg=train_cfg,
                out=tmp / name.split()[0],
                device="cpu",
            )
            seconds = time.perf_counter() - t
            seen = (
                len(splits["train"])
                // train_cfg.batch_size
                * train_cfg.batch_size
                * len(card.history)
            )
            served = serve(tmp / name.split()[0], min(args.seconds, 3.0))
            m = card.metrics
            print(
                f"{name:<28} {card.parameters:>9,} {seen / seconds:>10.0f} {m['pattern_accuracy']:>6.3f} {m['pattern_macro_f1']:>6.3f} "
                f"{m['pattern_ece_after']:>9.4f} {served['charts_per_s']:>9.0f} {served['single_p99_ms']:>7.2f}"
            )


def datetime_start():
    from daemon.training import SIM_START

    return SIM_START


if __name__ == "__main__":
    main()
