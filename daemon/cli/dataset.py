"""`vlmtrader dataset build|info`: build a versioned chart/text dataset from bars, or describe one."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import urllib.error
import urllib.request
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from daemon.errors import EXIT_CONFIG, EXIT_OK
from vlm_engine.dataset.bars import BAR_COLUMNS, bar_files, load_bars
from vlm_engine.dataset.builder import DatasetConfig, SourceInfo, build_dataset, read_manifest
from vlm_engine.dataset.errors import DatasetError
from vlm_engine.labels import ParaphraseConfig, ParaphraseFailed, usable_paraphrase
from vlm_engine.render import ChartInputError, ChartSpec

EXIT_INPUT = 1
SIM_START = datetime(2024, 1, 1, tzinfo=UTC)
PARAPHRASE_PROMPT = (
    "Rewrite this description of a candlestick chart in different words. Keep every fact "
    "(pattern, direction, volume, indicators); add nothing. Answer with the sentence only."
)


class LlmParaphraser:
    """Paraphrases through an OpenAI-compatible chat endpoint, with an on-disk cache.

    Every failure (timeout, HTTP error, malformed JSON, refusal) raises ParaphraseFailed, so
    the text generator keeps the template text; `stats` counts outcomes by reason.
    """

    def __init__(self, *, config: ParaphraseConfig, api_key: str | None, cache_dir: Path) -> None:
        self.config = config
        self._api_key = api_key
        self._cache_dir = cache_dir
        self.stats: Counter[str] = Counter()

    def _cache_path(self, text: str) -> Path:
        key = json.dumps(
            [self.config.url, self.config.model, self.config.temperature, PARAPHRASE_PROMPT, text]
        )
        return self._cache_dir / f"{hashlib.sha256(key.encode()).hexdigest()}.json"

    def __call__(self, text: str) -> str:
        path = self._cache_path(text)
        if path.exists():
            try:
                cached = json.loads(path.read_text())["text"]
            except (OSError, ValueError, KeyError, TypeError):
                cached = None
            if isinstance(cached, str):
                self.stats["cached"] += 1
                return cached
        answer = self._ask(text)
        self._cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"text": answer, "source": text}))
        tmp.replace(path)
        self.stats["ok"] += 1
        return answer

    def _count(self, reason: str, detail: str) -> str:
        self.stats[reason] += 1
        return f"paraphrase {reason}: {detail}"

    def _ask(self, text: str) -> str:
        body = json.dumps(
            {
                "model": self.config.model,
                "temperature": self.config.temperature,
                "messages": [
                    {"role": "system", "content": PARAPHRASE_PROMPT},
                    {"role": "user", "content": text},
                ],
            }
        ).encode()
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        url = self.config.url.rstrip("/") + "/chat/completions"
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.config.timeout_seconds) as response:
                raw = response.read()
        except TimeoutError as e:
            msg = self._count("timeout", str(e))
            raise ParaphraseFailed(msg) from None
        except urllib.error.HTTPError as e:
            msg = self._count("http_error", f"status {e.code}")
            raise ParaphraseFailed(msg) from None
        except (urllib.error.URLError, OSError) as e:
            reason = "timeout" if "timed out" in str(e) else "unreachable"
            msg = self._count(reason, str(e))
            raise ParaphraseFailed(msg) from None
        try:
            answer = json.loads(raw)["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as e:
            msg = self._count("bad_response", repr(e))
            raise ParaphraseFailed(msg) from None
        if not usable_paraphrase(answer):
            msg = self._count("refusal", str(answer)[:80])
            raise ParaphraseFailed(msg)
        return str(answer).strip()


def make_paraphraser(config: ParaphraseConfig | None) -> LlmParaphraser | None:
    """The paraphrase hook a dataset config asks for (None when off)."""
    if config is None:
        return None
    return LlmParaphraser(
        config=config, api_key=os.environ.get(config.key_env), cache_dir=Path(config.cache_dir)
    )


def register(sub: Any) -> None:
    p = sub.add_parser("dataset", help="build or describe a chart/text dataset")
    dsub = p.add_subparsers(dest="dataset_command", metavar="ACTION")
    dsub.required = True
    build = dsub.add_parser(
        "build", help="build a dataset (HF DatasetDict + Parquet + manifest.json)"
    )
    source = build.add_mutually_exclusive_group(required=True)
    source.add_argument("--bars", type=Path, help="CSV/Parquet bar file or a directory of them")
    source.add_argument("--sim", action="store_true", help="use the built-in simulated market")
    build.add_argument(
        "--sim-bars", type=int, default=5000, help="bars per symbol from the simulator"
    )
    build.add_argument("--sim-seed", type=int, default=7)
    build.add_argument(
        "--sim-symbols", default="SIMA,SIMB,SIMC,SIMD", help="comma-separated symbols"
    )
    build.add_argument("--spec", type=Path, help="dataset config YAML, or a bare chart spec YAML")
    build.add_argument("--version", help="dataset version label (overrides the config)")
    build.add_argument("--seed", type=int, help="text generator seed (overrides the config)")
    build.add_argument("--stride", type=int, help="bars between samples (overrides the config)")
    build.add_argument("--out", required=True, type=Path, help="output directory")
    build.add_argument("--force", action="store_true", help="write into a non-empty directory")
    build.add_argument("--no-progress", action="store_true", help="no progress bar")
    build.set_defaults(func=_build)
    info = dsub.add_parser("info", help="print a built dataset's manifest summary")
    info.add_argument("dir", type=Path)
    info.add_argument("--json", action="store_true", help="print the whole manifest")
    info.set_defaults(func=_info)


def load_dataset_config(path: Path | None) -> DatasetConfig:
    """A DatasetConfig from YAML; a file holding only chart spec keys is taken as `spec:`."""
    if path is None:
        return DatasetConfig()
    try:
        data = msgspec.yaml.decode(path.read_bytes()) or {}
    except (OSError, msgspec.DecodeError) as e:
        msg = f"{path}: {e}"
        raise ValueError(msg) from None
    if isinstance(data, dict) and data and set(data) <= set(ChartSpec.__struct_fields__):
        data = {"spec": data}
    try:
        return msgspec.convert(data, type=DatasetConfig)
    except msgspec.ValidationError as e:
        msg = f"{path}: {e}"
        raise ValueError(msg) from None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _sim_frame(args: argparse.Namespace) -> tuple[Any, list[SourceInfo]]:
    from strategy.market_sim import SimMarketConfig, simulate_frame

    symbols = tuple(s.strip() for s in args.sim_symbols.split(",") if s.strip())
    config = SimMarketConfig(symbols=symbols, seed=args.sim_seed)
    described = msgspec.json.encode(
        {"sim": config, "start": SIM_START.isoformat(), "bars": args.sim_bars}
    )
    frame = simulate_frame(config, SIM_START, args.sim_bars)
    return frame, [
        SourceInfo(name=f"sim:{described.decode()}", sha256=hashlib.sha256(described).hexdigest())
    ]


def _build(args: argparse.Namespace) -> int:
    try:
        cfg = load_dataset_config(args.spec)
        overrides = {
            k: getattr(args, k)
            for k in ("version", "seed", "stride")
            if getattr(args, k) is not None
        }
        if overrides:
            cfg = msgspec.convert({**msgspec.to_builtins(cfg), **overrides}, type=DatasetConfig)
    except (ValueError, msgspec.ValidationError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_CONFIG
    out: Path = args.out
    paraphraser = make_paraphraser(cfg.paraphrase)
    if out.exists() and any(out.iterdir()) and not args.force:
        print(f"error: {out} is not empty (use --force to write into it)", file=sys.stderr)
        return EXIT_INPUT
    try:
        if args.sim:
            if args.sim_bars <= 0:
                print("error: --sim-bars must be > 0", file=sys.stderr)
                return EXIT_CONFIG
            frame, sources = _sim_frame(args)
        else:
            files = bar_files(args.bars)
            root = args.bars if args.bars.is_dir() else args.bars.parent
            sources = [SourceInfo(name=str(f.relative_to(root)), sha256=_sha256(f)) for f in files]
            frame = load_bars(args.bars)
        manifest = build_dataset(
            frame,
            cfg,
            out=out,
            sources=sources,
            progress=not args.no_progress,
            paraphrase=paraphraser,
        )
        # The source bars beside the charts: `vlmtrader train xgb --dataset DIR` reads them.
        (out / "bars").mkdir(exist_ok=True)
        frame[list(BAR_COLUMNS)].to_parquet(out / "bars" / "bars.parquet", index=False)
    except (DatasetError, ChartInputError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INPUT
    counts = ", ".join(f"{k} {v}" for k, v in manifest.counts.items() if v or k != "holdout")
    print(f"ok: {out} (dataset {manifest.dataset_hash}, spec {manifest.spec_hash}, {counts})")
    if paraphraser is not None:
        stats = ", ".join(f"{k} {v}" for k, v in sorted(paraphraser.stats.items())) or "none"
        print(f"paraphrases: {stats}")
    return EXIT_OK


def _info(args: argparse.Namespace) -> int:
    try:
        manifest = read_manifest(args.dir)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INPUT
    if args.json:
        print(msgspec.json.format(msgspec.json.encode(manifest), indent=2).decode())
        return EXIT_OK
    print(f"dataset:     {args.dir} ({manifest.format}, version {manifest.version})")
    print(f"hash:        {manifest.dataset_hash}")
    print(
        f"chart spec:  {manifest.spec_hash} ({manifest.renderer}, render version {manifest.render_version})"
    )
    print(f"labels:      version {manifest.label_version}, seed {manifest.seed}")
    print(f"bars:        {manifest.bars_hash[:16]} from {len(manifest.sources)} source(s)")
    for split, count in manifest.counts.items():
        if count == 0 and split == "holdout":
            continue
        d = manifest.directions[split]
        top = sorted(manifest.patterns[split].items(), key=lambda kv: (-kv[1], kv[0]))[:3]
        tops = ", ".join(f"{k} {v}" for k, v in top) or "-"
        print(
            f"{split:<12} {count:>7} samples  down/flat/up {d['down']}/{d['flat']}/{d['up']}  top patterns: {tops}"
        )
    print(f"embargoed:   {manifest.embargoed} samples dropped at split boundaries")
    return EXIT_OK
