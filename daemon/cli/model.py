"""`vlmtrader model build|bootstrap|info|export-onnx|verify`: build a bundle from your bars or the simulated market, inspect or check one.

`build` and `bootstrap` are one pipeline (daemon.training) fed by two sources: the user's bar
files labelled by the TA-Lib detectors, or the simulated market with its planted patterns.
This module parses arguments, sets up the log file and prints results; torch and friends load
only when a build runs (see daemon/cli/__init__.py).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec
import structlog

from daemon.cli.ray_flag import add_ray_argument
from daemon.cli.runtime_flag import add_runtime_flag
from daemon.cli.train import load_yaml_config, print_summary
from daemon.errors import EXIT_CONFIG, EXIT_OK, InputError
from daemon.log_setup import configure_logging
from daemon.model.bootstrap import build_log_path

if TYPE_CHECKING:
    from daemon.cluster.config import RayConfig
    from daemon.training import BuildConfig
    from vlm_engine.bundle import ModelCard

EXIT_INPUT = 1
S = TypeVar("S", bound=msgspec.Struct)
DEFAULT_OUT = Path("state/bundles/default")


def register(sub: Any) -> None:
    p = sub.add_parser("model", help="build, inspect or verify model bundles")
    msub = p.add_subparsers(dest="model_command", metavar="ACTION")
    msub.required = True
    build = msub.add_parser(
        "build",
        help="build a bundle from your bars (CSV/Parquet file or directory, any bar size)",
        description="Detector-labelled charts -> CLIP fine-tune + calibration -> XGBoost + fusion, "
        "with a time split (the last part held out for the card). Resumable: rerun the same "
        "command after an interruption.",
    )
    build.add_argument("--bars", required=True, type=Path, help="bars file or directory")
    build.add_argument("--out", required=True, type=Path, help="bundle directory to write")
    build.add_argument("--config", type=Path, help="build config YAML (BuildConfig fields)")
    build.add_argument(
        "--base", type=Path, help="local Hugging Face CLIP directory (save_pretrained) to fine-tune"
    )
    build.add_argument(
        "--quick",
        action="store_true",
        help="tiny config (weak model), for smoke runs; its settings win over --config's",
    )
    add_ray_argument(build)  # the walk-forward XGBoost fits as Ray tasks, CLIP on Ray Train
    build.add_argument(
        "--ray-workers",
        type=int,
        default=1,
        metavar="N",
        help="with --ray: Ray Train workers (DDP) fine-tuning CLIP, each a shard of every batch "
        "(1: the same bundle id as a local build with the same seed)",
    )
    build.set_defaults(func=_build)
    boot = msub.add_parser(
        "bootstrap", help="build the default bundle from the simulated market (CPU)"
    )
    boot.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"bundle directory (default {DEFAULT_OUT})"
    )
    boot.add_argument(
        "--quick",
        action="store_true",
        help="tiny config that finishes in seconds (weak model); its settings win over --config's",
    )
    boot.add_argument("--config", type=Path, help="bootstrap config YAML (BootstrapConfig fields)")
    boot.set_defaults(func=_bootstrap)
    info = msub.add_parser("info", help="print a bundle's model card summary")
    info.add_argument("bundle", type=Path)
    info.add_argument("--json", action="store_true", help="print the whole model card as JSON")
    info.set_defaults(func=_info)
    export = msub.add_parser(
        "export-onnx",
        help="add the ONNX export (fp32 + INT8) to a bundle built without one",
        description="Export the bundle's CLIP image tower to ONNX (fp32, and INT8 unless --no-int8), "
        "check parity on the bundle's test split (rebuilt from its source and build config: fp32 "
        "within 1e-4 of torch; INT8 pattern accuracy within 0.005 and direction AUC within 0.002 "
        "of fp32) and add what passes to the bundle; the card is rewritten atomically.",
    )
    export.add_argument("bundle", type=Path)
    export.add_argument(
        "--int8",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also export the INT8 tower (default: yes)",
    )
    export.add_argument(
        "--bars",
        type=Path,
        help="the bars a `model build` bundle was built from (default: its path)",
    )
    export.add_argument(
        "--config",
        type=Path,
        help="the build's config YAML (default: tries the default and the --quick one)",
    )
    export.set_defaults(func=_export_onnx)
    verify = msub.add_parser("verify", help="check every file of a bundle against its model card")
    verify.add_argument("bundle", type=Path)
    verify.add_argument("--spec-hash", help="also require this chart spec hash")
    add_runtime_flag(verify, default="auto")
    verify.set_defaults(func=_verify)


@contextmanager
def _log_to_file(out: Path) -> Iterator[Path]:
    """The build's structlog JSON lines go to DIR.build.log beside the bundle; its path is printed.

    Loggers are not cached meanwhile and the previous configuration comes back afterwards, so a
    build run in-process (tests) leaves logging as it found it."""
    path = build_log_path(out)  # the daemon's background bootstrap relays its progress from here
    path.parent.mkdir(parents=True, exist_ok=True)
    previous = structlog.get_config()
    with path.open("a", encoding="utf-8") as sink:
        configure_logging(fmt="json", stream=sink)
        structlog.configure(cache_logger_on_first_use=False)
        print(f"log: {path}", file=sys.stderr)
        try:
            yield path
        finally:
            structlog.configure(**previous)


def _run(action: Any, out: Path) -> int:
    # the model stack loads here, when a build runs
    from daemon.cluster.errors import ClusterError
    from daemon.training import BuildInputError
    from vlm_engine.bundle import BundleError
    from vlm_engine.clip import ClipError
    from vlm_engine.xgb import XgbError

    with ExitStack() as stack:
        try:
            stack.enter_context(_log_to_file(out))
        except OSError as e:  # an --out whose log beside it cannot be made or written
            print(f"error: --out {out}: cannot write its log {build_log_path(out)} "
                  f"({e.strerror or e}: {e.filename})", file=sys.stderr)  # fmt: skip
            return EXIT_INPUT
        try:
            card, wall = action()
        except (BuildInputError, ClipError, BundleError, XgbError, ClusterError) as e:
            print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
            return EXIT_INPUT
    print_summary(card, out)
    print(f"  built in {wall:.1f} s")
    return EXIT_OK


def quick_wins(cfg: S, quick: S, default: S, *, source: Path | None) -> S:
    """cfg with every setting of the --quick preset (the fields where quick differs from default)
    in place of the file's: a flag wins over --config, as --base and --ray do. One stderr note
    names the file's settings it replaced."""
    fields = [f for f in cfg.__struct_fields__ if getattr(quick, f) != getattr(default, f)]
    replaced = [
        f for f in fields if getattr(cfg, f) not in (getattr(default, f), getattr(quick, f))
    ]
    if replaced and source is not None:
        print(f"note: --quick replaces {', '.join(replaced)} from {source}", file=sys.stderr)
    return msgspec.structs.replace(cfg, **{f: getattr(quick, f) for f in fields})


def _build(args: argparse.Namespace) -> int:
    from daemon.training import BuildConfig, build_from_bars, quick_build_config

    try:
        cfg, section = _build_config(args.config, BuildConfig())
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_CONFIG
    if args.quick:
        cfg = quick_wins(cfg, quick_build_config(), BuildConfig(), source=args.config)
    if args.base is not None:
        if not (args.base / "config.json").is_file():
            print(
                f"error: {args.base}: not a saved Hugging Face CLIP (no config.json)",
                file=sys.stderr,
            )
            return EXIT_CONFIG
        cfg = msgspec.structs.replace(
            cfg, train=msgspec.structs.replace(cfg.train, base=str(args.base))
        )
    if args.ray_workers < 1 or (args.ray_workers > 1 and args.ray is None and section is None):
        print(
            f"error: --ray-workers {args.ray_workers}: needs --ray (or a ray: section in --config) "
            "and at least 1",
            file=sys.stderr,
        )
        return EXIT_CONFIG

    def action() -> tuple[ModelCard, float]:
        from daemon.cluster.config import ray_config, ray_origin
        from daemon.cluster.run import cluster_run
        from daemon.training import ClipOnRay

        with cluster_run(
            ray_config(args.ray, section),
            bars=args.bars,
            progress=sys.stderr.isatty(),
            origin=ray_origin(args.ray, section, args.config),
        ) as grid:
            result = build_from_bars(
                args.bars,
                cfg,
                args.out,
                progress=sys.stderr.isatty(),
                task_map=grid.task_map if grid is not None else None,
                clip_ray=ClipOnRay(address=grid.cfg.address, workers=args.ray_workers)
                if grid is not None
                else None,
            )
        return result.card, result.wall_seconds

    return _run(action, args.out)


def _build_config(path: Path | None, default: BuildConfig) -> tuple[BuildConfig, RayConfig | None]:
    """The build config YAML and its `ray:` section (read as backtest and evaluate read theirs:
    Ray runs when it is there, `--ray ADDRESS` wins its address); ValueError, one line naming the
    file and the key, when either is bad."""
    from daemon.cluster.config import ray_section
    from daemon.training import BuildConfig

    if path is None:
        return default, None
    try:
        document = msgspec.yaml.decode(path.read_bytes())
        section = ray_section(document)
        if isinstance(document, dict):
            document = {k: v for k, v in document.items() if k != "ray"}
        # as msgspec.yaml.decode(raw, type=BuildConfig) converts, without the ray section
        cfg = msgspec.convert(document, BuildConfig, builtin_types=(datetime, date), str_keys=True)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError, ValueError) as e:
        msg = f"{path}: {' '.join(str(e).split())}"
        raise ValueError(msg) from None
    return cfg, section


def _bootstrap(args: argparse.Namespace) -> int:
    from daemon.training import BootstrapConfig, bootstrap, quick_config

    try:
        cfg = load_yaml_config(args.config, BootstrapConfig(), BootstrapConfig)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_CONFIG
    if args.quick:
        cfg = quick_wins(cfg, quick_config(), BootstrapConfig(), source=args.config)
    return _run(lambda: bootstrap(cfg, args.out, progress=sys.stderr.isatty()), args.out)


def _when(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%d %H:%M")


def describe_fusion(card: ModelCard, fusion: Any) -> str:
    """What "fused" is in words, plus whether CLIP adds anything on the card's held-out rows."""
    names = card.stages.get("tabular", {}).get("feature_names", [])
    text: str = fusion.describe(xgb_reads_clip=any(str(n).startswith("clip_") for n in names))
    fused, technical = (
        card.metrics.get("fused_holdout_auc"),
        card.metrics.get("xgb_technical_holdout_auc"),
    )
    if fused is not None and technical is not None and fused <= technical:
        text += f"; CLIP adds nothing out of fold (held-out AUC fused {fused:.4f} <= xgb_technical {technical:.4f})"
    return text


def _info(args: argparse.Namespace) -> int:
    from daemon.model.loader import read_fusion
    from vlm_engine.bundle import BundleError, read_card

    try:
        card = read_card(args.bundle)
    except BundleError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INPUT
    if args.json:
        print(msgspec.json.format(msgspec.json.encode(card)).decode())
        return EXIT_OK
    print(f"bundle:      {args.bundle}")
    print(f"bundle id:   {card.bundle_id}")
    print(f"spec hash:   {card.spec_hash}")
    print(f"base:        {card.base} ({card.parameters:,} parameters)")
    print(f"dataset:     {card.dataset.source} ({card.dataset.manifest_hash})")
    if card.trained_on is not None:
        t = card.trained_on
        print(f"bar size:    {t.bar_seconds} s")
        print(f"horizon:     {t.horizon_bars} bars")
        print(
            f"trained on:  {_when(t.start)} .. {_when(t.end)} UTC, {len(t.symbols)} symbol(s) ({t.source})"
        )
        if t.holdout_start:
            print(f"held out:    from {_when(t.holdout_start)} UTC (card figures only)")
    else:
        print("bar size:    not recorded (a bundle from before model build)")
    print(f"classes:     {', '.join(card.prompts.classes)}")
    print(f"files:       {len(card.files)}")
    analogs = card.stages.get("analogs")
    if isinstance(analogs, dict):
        print(
            f"analogs:     {analogs.get('rows')} training charts (cap {analogs.get('max_rows')}), "
            f"{analogs.get('bytes_per_chart')} bytes per chart"
        )
    if "tabular" in card.stages:
        try:
            fusion = read_fusion(args.bundle)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            print(f"error: {args.bundle}: corrupt fusion.json ({e})", file=sys.stderr)
            return EXIT_INPUT
        print(f"fusion:      {describe_fusion(card, fusion)}")
    for name in (
        "pattern_accuracy",
        "pattern_macro_f1",
        "pattern_ece_before",
        "pattern_ece_after",
        "direction_auc",
        "direction_brier_after",
        *(f"{m}_holdout_auc" for m in ("clip", "xgb_technical", "xgb", "fused")),
    ):
        if name in card.metrics or name in card.unmeasured:
            print(f"{name + ':':<24} {card.figure(name, 4)}")
    return EXIT_OK


def _export_onnx(args: argparse.Namespace) -> int:
    from daemon.training import BootstrapConfig, BuildConfig, BuildInputError
    from daemon.training.export_onnx import SIM, export_onnx
    from vlm_engine.bundle import BundleError, read_card
    from vlm_engine.infer import ExportRefused

    try:
        source = read_card(args.bundle).dataset.source
        kind: type[BuildConfig] = BootstrapConfig if source.startswith(SIM) else BuildConfig
        config = load_yaml_config(args.config, kind(), kind) if args.config else None
        result = export_onnx(
            args.bundle,
            int8=args.int8,
            config=config,
            bars=args.bars,
            progress=sys.stderr.isatty(),
        )
    except (BundleError, BuildInputError, ExportRefused, ValueError) as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return EXIT_INPUT
    gap = result.parity.get("onnx_max_prob_gap")
    print(
        f"ok: {args.bundle} bundle {result.card.bundle_id}: ONNX {', '.join(result.runtimes)} added, "
        f"parity on {result.test_charts} test charts (fp32 max probability gap {gap})"
    )
    for runtime, reason in result.refused.items():
        print(f"{runtime} not written: {reason}")
    return EXIT_OK


def _verify(args: argparse.Namespace) -> int:
    from daemon.model.bundle_check import check_bundle
    from vlm_engine.bundle import BundleError, verify_bundle

    try:
        card = verify_bundle(args.bundle, spec_hash=args.spec_hash)
        checked = check_bundle(args.bundle, spec_hash=args.spec_hash, runtime=args.runtime)
    except (BundleError, InputError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INPUT
    print(
        f"ok: {args.bundle} bundle {card.bundle_id}, {len(card.files)} files verified, spec {card.spec_hash}, "
        f"loaded and scored a {checked.bars}-bar chart on CLIP runtime {checked.runtime} "
        f"(p_up {checked.p_up:.3f})"
    )
    return EXIT_OK
