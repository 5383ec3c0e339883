"""`vlmtrader backtest` and `vlmtrader evaluate` as a library: the live strategy code over a bars file, with a report.

run_backtest and run_evaluate take the parsed arguments of daemon/cli/backtest.py.
The bundle's scorers come from the model package (daemon/model/contenders.py).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import msgspec
import pandas as pd
import structlog
from tqdm import tqdm

from daemon.cluster.config import ray_config, ray_origin
from daemon.cluster.errors import ClusterError
from daemon.cluster.run import ClusterRun, cluster_run
from daemon.config import AppConfig, load_config
from daemon.errors import EXIT_CONFIG, EXIT_OK, ConfigError, InputError
from daemon.journal import Journal
from daemon.model.active import LoadOptions
from daemon.model.contenders import (
    BacktestBundle,
    bundle_contenders,
    evaluation_models,
    xgb_info,
)
from daemon.model.loader import XGB_DIR, read_fusion, xgb_only_scorer
from daemon.runtime import tune_gc
from strategy.backtest.compare import StrategyResult, run_comparison, sizing_note
from strategy.backtest.data import frame_batches, precompute_signals
from strategy.backtest.engine import BacktestConfig, JournalSink, LookupScorer
from strategy.backtest.evaluate import (
    BundleInfo,
    Evaluation,
    EvaluationConfig,
    evaluate,
    evaluation_summary,
)
from strategy.backtest.report import TRADES_SHOWN, report_html, report_json
from strategy.features import FeatureConfig
from strategy.ml_scorer import VisionModel
from strategy.rule_scorer import RuleScorer
from strategy.scoring import Scorer
from strategy.types import Bar
from vlm_engine.dataset.bars import frame_bar_seconds, load_bars
from vlm_engine.dataset.errors import BarsInputError
from vlm_engine.xgb.errors import XgbError
from vlm_engine.xgb.model import XgbModel
from vlm_engine.xgb.pca import PcaParams

if TYPE_CHECKING:  # torch loads only when a bundle does
    from vlm_engine.infer.engine import RuntimeName

log = structlog.get_logger("daemon.backtest")

EXIT_INPUT = 1
DEFAULT_HORIZON_BARS = 5  # evaluate's horizon on bars of another size than the bundle's
MIN_EVALUATE_FOLDS = 4  # walk-forward folds in evaluate: 1 warm-up + at least 3 scored


def _fail(message: str, code: int = EXIT_INPUT) -> int:
    print(f"vlmtrader: {message}", file=sys.stderr)
    return code


def _load_batches(path: Path) -> tuple[list[list[Bar]], int, pd.DataFrame]:
    frame = load_bars(path)
    return frame_batches(frame), frame_bar_seconds(frame, where=str(path)), frame


def backtest_config(cfg: AppConfig, bar_seconds: int) -> BacktestConfig:
    """The daemon's component configs as a backtest config (bar size taken from the data)."""
    bars = msgspec.structs.replace(cfg.bars, bar_seconds=bar_seconds)
    strategy = msgspec.structs.replace(cfg.strategy, bar_seconds=bar_seconds)
    return BacktestConfig(
        starting_cash=cfg.starting_cash,
        bars=bars,
        strategy=strategy,
        risk=cfg.risk,
        broker=cfg.broker,
        order_prefix=cfg.account.upper()[:8] or "VT",
    )


def clip_options(cfg: AppConfig, runtime: str | None) -> LoadOptions:
    """Where CLIP runs for a bundle's contenders: the config's scorer.device/threads/workers and
    scorer.runtime, which a --runtime flag overrides. `auto` resolves by a fixed order, untimed
    (auto_rule, applied where the engine is chosen): the daemon's auto times the runtimes at load,
    which would let two machines score one bundle with different variants and report different
    figures. Every runtime auto may give scores a chart the same whatever its batch-mates (INT8
    only when static), so a research run does not change with how its charts were batched or
    sharded (--ray equals local)."""
    sc = cfg.scorer
    return LoadOptions(
        device=sc.device,
        threads=sc.threads,
        workers=sc.workers,
        runtime=cast("RuntimeName", runtime or sc.runtime),  # --runtime's choices are checked
        auto_rule="fixed-order",
    )


def runtime_meta(requested: str, chosen: str) -> dict[str, str]:
    """The report's record of the CLIP runtime: what was asked for, and what served."""
    rule = " (fixed order onnx-int8 > onnx > torch, untimed)" if requested == "auto" else ""
    return {"clip_runtime": chosen, "clip_runtime_requested": requested + rule}


def bar_size_warning(info: BacktestBundle, bar_seconds: int) -> str | None:
    """A bundle trained on another bar size scores these bars with features that mean other things."""
    if info.bar_seconds == bar_seconds:
        return None
    return (
        f"the bundle was trained on {info.bar_seconds} s bars, these bars are {bar_seconds} s: "
        "its scores are out of their training conditions; build one from your bars with "
        "`vlmtrader model build --bars PATH --out DIR`"
    )


def run_meta(
    config: BacktestConfig,
    batches: Sequence[Sequence[Bar]],
    *,
    config_path: Path,
    bars_path: Path,
    bundle: BacktestBundle | None,
) -> dict[str, Any]:
    """The page's and report.json's run details: data, period, capital, sizing, costs, bundle."""
    strategy, broker = config.strategy, config.broker
    first = batches[0][0].ts if batches and batches[0] else None
    last = batches[-1][0].ts if batches and batches[-1] else None
    sizing = (
        f"{strategy.position_fraction:g} of equity per position"
        if strategy.position_fraction is not None
        else f"{strategy.position_notional:,.2f} per position"
    )
    steps = ", ".join(f"{k} {v:g}" for k, v in sorted(strategy.quantity_steps.items()))
    sizing += f"; quantity_step {strategy.quantity_step:g}" + (f" ({steps})" if steps else "")
    fill = "next bar's open" if broker.latency_bars else "the last close"
    meta: dict[str, Any] = {
        "config": str(config_path),
        "bars": str(bars_path),
        "bar_seconds": config.bars.bar_seconds,
        "symbols": len({b.symbol for batch in batches for b in batch}),
        "period_start": first.isoformat() if first else None,
        "period_end": last.isoformat() if last else None,
        "starting_cash": config.starting_cash,
        "sizing": sizing,
        "entry_rule": (
            f"enter_threshold {strategy.enter_threshold:g}, min_confidence "
            f"{strategy.min_confidence:g}, hold_bars {strategy.hold_bars}, "
            f"{'long and short' if strategy.allow_short else 'long only'}, {strategy.order_type} orders"
        ),
        "costs": (
            f"commission {broker.commission_per_share:g}/share (min {broker.min_commission:g}, "
            f"max {broker.max_commission_fraction:.2%} of notional), spread {broker.spread_bps:g} bps, "
            f"slippage {broker.slippage_bps:g} bps; market orders fill at {fill}, "
            f"at most {broker.max_volume_fraction:.0%} of a bar's volume"
        ),
        "commission_per_share": broker.commission_per_share,
        "min_commission": broker.min_commission,
        "spread_bps": broker.spread_bps,
        "slippage_bps": broker.slippage_bps,
    }
    if bundle is not None:
        meta |= {
            "bundle": bundle.path,
            "bundle_id": bundle.bundle_id,
            "fusion": bundle.fusion,
            "horizon_bars": bundle.horizon_bars,
            "bundle_bar_seconds": bundle.bar_seconds,
        }
        if bundle.runtime:
            meta["clip_runtime"] = bundle.runtime
    return meta


def summary_lines(results: Mapping[str, StrategyResult]) -> list[str]:
    """The CLI's summary: one line per contender, then why it made no trade, its risk
    rejections by reason and its halts; a last line when annualised figures are n/a."""
    lines: list[str] = []
    for name, r in results.items():
        m = r.metrics
        sharpe = "n/a" if m.annualised_note else f"{m.sharpe:.2f}"
        lines.append(
            f"{name:14s} return {m.total_return * 100:7.2f}%  sharpe {sharpe:>7s}  "
            f"maxdd {m.max_drawdown * 100:6.2f}%  trades {m.trades}  "
            f"risk rejected {r.run.risk_rejections}"
        )
        sizing = sizing_note(r.run)
        if r.no_trade_reason:
            lines.append(f"  no trade: {r.no_trade_reason}")
        elif sizing:
            lines.append(f"  skipped: {sizing}")
        if r.run.rejections:
            counts = ", ".join(f"{k} {v}" for k, v in sorted(r.run.rejections.items()))
            lines.append(f"  rejections: {counts}")
        lines.extend(
            f"  {c.current} at {c.ts.isoformat()}: {c.reason} ({c.detail})"
            for c in r.run.state_changes
        )
    notes = sorted(
        {r.metrics.annualised_note for r in results.values() if r.metrics.annualised_note}
    )
    lines.extend(f"sharpe and annual return {note}" for note in notes)
    return lines


def _is_full_bundle(bundle: Path) -> bool:
    return (bundle / "model_card.json").is_file()


def _progress(total: int, desc: str, disable: bool) -> tqdm[Any]:
    return tqdm(total=total, desc=desc, unit="bar", disable=disable, file=sys.stderr)


def _write_report(directory: Path, html_text: str, json_bytes: bytes) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "report.html").write_text(html_text)
    (directory / "report.json").write_bytes(json_bytes)


def run_backtest(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.config)
    except ConfigError as e:
        return _fail(str(e), EXIT_CONFIG)
    try:
        batches, bar_seconds, frame = _load_batches(args.bars)
    except BarsInputError as e:
        return _fail(str(e))
    config = backtest_config(cfg, bar_seconds)
    try:
        with cluster_run(
            ray_config(getattr(args, "ray", None), cfg.ray),
            bars=args.bars,
            progress=not args.no_progress,
            origin=ray_origin(getattr(args, "ray", None), cfg.ray, args.config),
        ) as grid:
            return _backtest(args, cfg, config, batches, frame, grid)
    except ClusterError as e:
        return _fail(str(e))


def _backtest(
    args: argparse.Namespace,
    cfg: AppConfig,
    config: BacktestConfig,
    batches: list[list[Bar]],
    frame: pd.DataFrame,
    grid: ClusterRun | None,
) -> int:
    bar_seconds = config.bars.bar_seconds
    n_bars = sum(len(b) for b in batches)
    scorers: dict[str, Scorer | LookupScorer] = {}
    candidates: dict[str, Scorer] = {"rules": RuleScorer(config=cfg.scorer.rules)}
    info: BacktestBundle | None = None
    loaded: Any = None  # the full bundle, to explain its contenders' trades after the run
    if args.bundle is not None and _is_full_bundle(args.bundle):
        try:
            options = clip_options(cfg, args.runtime)
            found, info, loaded = bundle_contenders(args.bundle, config.bars, options)
            if grid is not None:  # the cluster scores CLIP on the runtime the driver settled
                settled = msgspec.structs.replace(options, runtime=info.runtime)
                vision = grid.clip_scores(
                    bundle=args.bundle, frame=frame, store=config.bars, runtime=info.runtime
                )
                found, info, loaded = bundle_contenders(
                    args.bundle, config.bars, settled, vision=vision
                )
        except InputError as e:
            return _fail(str(e))
        candidates.update(found)
        print(f"CLIP runtime: {info.runtime}", file=sys.stderr)
    elif args.bundle is not None:
        try:
            candidates["xgb"] = xgb_only_scorer(args.bundle)
            info = xgb_info(args.bundle)
        except InputError as e:
            return _fail(str(e))
        except (XgbError, OSError, msgspec.ValidationError, msgspec.DecodeError) as e:
            return _fail(f"{args.bundle}: {e}")
    mismatch = bar_size_warning(info, bar_seconds) if info else None
    warnings = [mismatch] if mismatch else []
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
        log.warning("bundle.mismatched", bundle=str(args.bundle), problem=warning)
    # Warm now, as the daemon at daemon.ready: the bars and the models are loaded, so the
    # collector stops rescanning them through the scoring and the simulation (3-5% of a run).
    tune_gc()
    for name, scorer in candidates.items():
        with _progress(n_bars, f"scoring {name}", args.no_progress) as bar:
            scorers[name] = precompute_signals(scorer, batches, config.bars, progress=bar.update)
    journal: Journal | None = None
    if args.journal is not None:
        # The daemon's write-ahead path: orders commit alone, the rest is group-committed.
        journal = Journal(args.journal, writer=getattr(args, "journal_writer", "thread"))
        journal.open()

    def journal_for(name: str) -> JournalSink | None:
        return journal if name == "rules" else None

    try:
        with _progress(n_bars * len(scorers), "backtest", args.no_progress) as bar:
            results = run_comparison(
                batches,
                scorers,
                config,
                journal_for=journal_for if journal is not None else None,
                progress=bar.update,
                task_map=grid.task_map if grid is not None and journal is None else None,
            )
    finally:
        if journal is not None:
            journal.close()
    meta = run_meta(config, batches, config_path=args.config, bars_path=args.bars, bundle=info)
    if info is not None and info.runtime:
        meta |= runtime_meta(args.runtime or cfg.scorer.runtime, info.runtime)
    links = None
    if loaded is not None and not getattr(args, "no_explain", False):
        links = _explain_trades(results, candidates, scorers, loaded, batches, config, cfg, args)
    _write_report(
        args.report,
        report_html(results, meta=meta, warnings=warnings, trade_links=links),
        report_json(results, meta=meta, warnings=warnings),
    )
    for line in summary_lines(results):
        print(line)
    for warning in warnings:
        print(f"warning: {warning}")
    print(f"report: {args.report / 'report.html'}")
    return EXIT_OK


def _explain_trades(
    results: Mapping[str, StrategyResult],
    candidates: Mapping[str, Scorer],
    lookups: Mapping[str, Any],
    loaded: Any,
    batches: Sequence[Sequence[Bar]],
    config: BacktestConfig,
    cfg: AppConfig,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Each ML contender's trades explained after the run (daemon/explain/trades.py)."""
    from daemon.explain.trades import explain_trades

    args.report.mkdir(parents=True, exist_ok=True)
    links = explain_trades(
        results=results,
        contenders=candidates,
        lookups=lookups,
        bundle=loaded,
        batches=batches,
        bars=config.bars,
        report_dir=args.report,
        config=cfg.explain,
        limit=TRADES_SHOWN,
    )
    log.info(
        "backtest.explained", trades={n: sum(x is not None for x in v) for n, v in links.items()}
    )
    return dict(links)


def run_evaluate(args: argparse.Namespace) -> int:
    cfg = AppConfig()
    if args.config is not None:
        try:
            cfg = load_config(args.config)
        except ConfigError as e:
            return _fail(str(e), EXIT_CONFIG)
    try:
        batches, bar_seconds, frame = _load_batches(args.bars)
        model = XgbModel.load(args.bundle / XGB_DIR)
    except (BarsInputError, XgbError) as e:
        return _fail(str(e))
    try:
        with cluster_run(
            ray_config(getattr(args, "ray", None), cfg.ray),
            bars=args.bars,
            progress=not args.no_progress,
            origin=ray_origin(getattr(args, "ray", None), cfg.ray, args.config),
        ) as grid:
            return _evaluate(args, cfg, batches, bar_seconds, frame, model, grid)
    except ClusterError as e:
        return _fail(str(e))


def _evaluate(
    args: argparse.Namespace,
    cfg: AppConfig,
    batches: list[list[Bar]],
    bar_seconds: int,
    frame: pd.DataFrame,
    model: XgbModel,
    grid: ClusterRun | None,
) -> int:
    features = msgspec.convert(model.meta.feature_config, FeatureConfig)
    fusion = read_fusion(args.bundle)
    vision: VisionModel | None = None
    pca: PcaParams | None = None
    bundle = BundleInfo(bar_seconds=model.meta.bar_seconds)
    runtime = ""
    if _is_full_bundle(args.bundle):  # CLIP fixed from the bundle; XGBoost and stacking refitted
        try:
            vision, pca, features, fusion, bundle, runtime = evaluation_models(
                args.bundle,
                backtest_config(cfg, bar_seconds).bars,
                clip_options(cfg, args.runtime),
            )
        except InputError as e:
            return _fail(str(e))
        print(f"CLIP runtime: {runtime}", file=sys.stderr)
        if grid is not None:  # the same CLIP, its charts rendered and scored on the cluster
            store = backtest_config(cfg, bar_seconds).bars
            vision = grid.clip_scores(bundle=args.bundle, frame=frame, store=store, runtime=runtime)
    horizon = args.horizon or default_horizon(
        bundle.bar_seconds, model.meta.horizon_bars, bar_seconds
    )
    train = msgspec.convert(model.meta.extra.get("train_config", {}), _train_type())
    # the first fold is evaluate's warm-up (calibration, stacking): keep enough folds to score
    train = msgspec.structs.replace(train, n_folds=max(train.n_folds, MIN_EVALUATE_FOLDS))
    config = EvaluationConfig(
        horizon_bars=horizon,
        features=features,
        train=train,
        fusion=fusion,
        rules=cfg.scorer.rules,
        backtest=backtest_config(cfg, bar_seconds),
    )
    n_bars = sum(len(b) for b in batches)
    try:
        runs = 5 if vision is not None else 3  # xgb, fused, rules (+ clip, xgb_technical)
        with _progress(n_bars * runs, "evaluate", args.no_progress) as bar:
            ev = evaluate(
                batches,
                config,
                vision=vision,
                pca=pca,
                bundle=bundle,
                progress=bar.update,
                task_map=grid.task_map if grid is not None else None,
            )
    except (XgbError, ValueError) as e:
        return _fail(f"{args.bars}: {e}")
    for note in ev.notes:
        print(f"warning: {note}", file=sys.stderr)
        log.warning("evaluate.noted", note=note)
    print(f"horizon {ev.horizon_bars} bars of {ev.bar_seconds} s; base rate {ev.base_rate:.4f}")
    for name, m in ev.model_metrics.items():
        print(
            f"{name:14s} auc {m['auc']:.4f} [{m['auc_ci_low']:.4f}, {m['auc_ci_high']:.4f}]  "
            f"brier {m['brier']:.4f}  ece {m['ece']:.4f}  n {m['n']}"
        )
    for name, r in ev.results.items():
        print(f"{name:14s} sharpe {r.metrics.sharpe:7.2f}  trades {r.metrics.trades}")
    print(ev.fusion)
    print(f"verdict: {ev.verdict}")
    log.info("evaluate.finished", verdict=ev.verdict, horizon_bars=ev.horizon_bars,
             test_rows=ev.test_rows)  # fmt: skip
    if args.report is not None:
        meta = {"bars": str(args.bars), "bundle": str(args.bundle)}
        requested = args.runtime or cfg.scorer.runtime
        write_evaluation(
            args.report, ev, meta | (runtime_meta(requested, runtime) if runtime else {})
        )
        print(f"report: {args.report / 'report.html'}")
    return EXIT_OK


def default_horizon(bundle_bar_seconds: int, bundle_horizon: int, bar_seconds: int) -> int:
    """The bundle's horizon on bars of its own size, else DEFAULT_HORIZON_BARS."""
    return bundle_horizon if bundle_bar_seconds == bar_seconds else DEFAULT_HORIZON_BARS


def write_evaluation(directory: Path, ev: Evaluation, meta: dict[str, Any]) -> None:
    """report.html, report.json (the evaluation's fields at top level) and predictions.parquet."""
    summary = evaluation_summary(ev)
    meta = {**meta, **_flat(summary)}
    top = {k: v for k, v in summary.items() if k not in ("model_metrics", "backtest")}
    doc = msgspec.json.decode(
        report_json(
            ev.results, model_metrics=ev.model_metrics, calibration=ev.calibration, meta=meta
        )
    )
    doc.update(_json_safe(top))
    doc["model_metrics"] = _json_safe(ev.model_metrics)
    _write_report(
        directory,
        report_html(
            ev.results,
            calibration=ev.calibration,
            meta=meta,
            title="vlmtrader evaluation (out of sample)",
            evaluation=summary,
        ),
        msgspec.json.encode(doc),
    )
    ev.predictions.to_parquet(directory / "predictions.parquet", index=False)


def _json_safe(value: Any) -> Any:
    """NaN / inf as null (JSON has neither)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _train_type() -> Any:
    from vlm_engine.xgb.train import XgbTrainConfig

    return XgbTrainConfig


def _flat(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in summary.items() if not isinstance(v, dict | list)}
