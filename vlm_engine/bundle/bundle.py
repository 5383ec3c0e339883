"""The model bundle: one directory the daemon loads as a unit, validated file by file.

Layout:
    clip/                 CLIPModel + tokenizer + preprocessor (save_pretrained format)
    chart_spec.json       the ChartSpec the model was trained on
    calibration.json      Calibration parameters
    figures/*.png         reliability diagrams (optional)
    xgb/, fusion.json,    XGBoost direction model, fitted fusion and the embedding PCA
    pca.json              (added by add_to_bundle; optional for a CLIP-only bundle)
    model_card.json       spec hash, prompts, dataset, train config, metrics, sha256 of every file
                          (the card: vlm_engine/bundle/card.py)
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import structlog

from vlm_engine.bundle.card import (
    CARD_FILE,
    FORMAT_VERSION,
    DatasetRef,
    ModelCard,
    TrainedOn,
    read_card,
)
from vlm_engine.bundle.errors import BundleError, BundleSpecMismatch
from vlm_engine.calibrate.params import Calibration
from vlm_engine.clip.data import PromptSet
from vlm_engine.clip.errors import ClipError
from vlm_engine.render import ChartSpec

if TYPE_CHECKING:  # torch loads with a CLIP model, not with a model card (check_files)
    from vlm_engine.clip.model import ClipParts

log = structlog.get_logger("vlm_engine.bundle")

SPEC_FILE = "chart_spec.json"
CALIBRATION_FILE = "calibration.json"
CLIP_DIR = "clip"
REQUIRED = (SPEC_FILE, CALIBRATION_FILE, f"{CLIP_DIR}/config.json")


class Bundle:
    """A loaded, validated bundle: model parts, chart spec, prompts, calibration and card."""

    def __init__(
        self,
        *,
        path: Path,
        parts: ClipParts,
        spec: ChartSpec,
        calibration: Calibration,
        card: ModelCard,
    ) -> None:
        self.path = path
        self.parts = parts
        self.spec = spec
        self.calibration = calibration
        self.card = card

    @property
    def bundle_id(self) -> str:
        return self.card.bundle_id

    @property
    def prompts(self) -> PromptSet:
        return self.card.prompts


def maker(name: str) -> str:
    """The command that writes a bundle file (for the message that refuses a bundle without it)."""
    if name.startswith(("xgb/", "xgb_technical/")) or name == "fusion.json":
        return "`vlmtrader train xgb --dataset BARS --bundle DIR`"
    if name == CALIBRATION_FILE or name.startswith("figures/"):
        return "`vlmtrader calibrate --bundle DIR --dataset DATASET`"
    if name.startswith(f"{CLIP_DIR}/") or name == SPEC_FILE:
        return "`vlmtrader train clip --dataset DATASET --out DIR`"
    return "`vlmtrader model build --bars PATH --out DIR`"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


PARTIAL = ".partial"  # a file being written (atomic_write); never part of a bundle


def _hash_files(directory: Path) -> dict[str, str]:
    return {
        p.relative_to(directory).as_posix(): sha256_file(p)
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != CARD_FILE and not p.name.endswith(PARTIAL)
    }


def atomic_write(path: Path, data: bytes) -> None:
    """Write path as a whole or not at all: a synced sibling file renamed over it (OSError if not)."""
    partial = path.with_name(path.name + PARTIAL)
    with partial.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _bundle_id(files: dict[str, str]) -> str:
    digest = hashlib.sha256()
    for name, sha in sorted(files.items()):
        digest.update(f"{name}\0{sha}\n".encode())
    return digest.hexdigest()[:16]


def save_bundle(
    directory: Path,
    *,
    parts: ClipParts,
    spec: ChartSpec,
    prompts: PromptSet,
    dataset: DatasetRef,
    base: str = "",
    calibration: Calibration | None = None,
    train_config: dict[str, Any] | None = None,
    history: list[dict[str, Any]] | None = None,
    metrics: dict[str, float] | None = None,
    calibration_report: dict[str, Any] | None = None,
    figures: dict[str, bytes] | None = None,
    created_at: str = "",
) -> ModelCard:
    """Write a complete bundle into a sibling temp directory, then move it into place."""
    staging = directory.with_name(f".{directory.name}.staging")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    from vlm_engine.clip.model import parameter_count

    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        parts.save(staging / CLIP_DIR)
        (staging / SPEC_FILE).write_bytes(msgspec.json.format(spec.canonical_json()) + b"\n")
        (staging / CALIBRATION_FILE).write_bytes(
            msgspec.json.format(msgspec.json.encode(calibration or Calibration())) + b"\n"
        )
        for name, data in (figures or {}).items():
            (staging / "figures").mkdir(exist_ok=True)
            (staging / "figures" / name).write_bytes(data)
        card = _write_card(
            staging,
            ModelCard(
                bundle_id="",
                spec_hash=spec.spec_hash(),
                base=base or "embedded-compact",
                parameters=parameter_count(parts.model),
                prompts=prompts,
                dataset=dataset,
                train_config=train_config or {},
                history=history or [],
                metrics=metrics or {},
                calibration_report=calibration_report or {},
                figures=tuple(f"figures/{n}" for n in sorted(figures or {})),
                created_at=created_at,
            ),
            unmeasured=(calibration_report or {}).get("unmeasured"),
        )
        publish_directory(staging, directory)
    except OSError as e:
        shutil.rmtree(staging, ignore_errors=True)
        msg = f"{directory}: cannot write the bundle ({e})"
        raise BundleError(msg) from None
    log.info(
        "bundle.saved", path=str(directory), bundle_id=card.bundle_id, spec_hash=card.spec_hash
    )
    return card


def publish_directory(staging: Path, target: Path) -> None:
    """Move a finished directory into place; an old one is replaced in two renames (OSError if not)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        old = target.with_name(f".{target.name}.old")
        if old.exists():
            shutil.rmtree(old)
        os.replace(target, old)
        os.replace(staging, target)
        shutil.rmtree(old)
    else:
        os.replace(staging, target)


def _write_card(
    directory: Path,
    card: ModelCard,
    *,
    unmeasured: Mapping[str, str] | None = None,
    files: dict[str, str] | None = None,
) -> ModelCard:
    """Write the card last; a metric without a finite value moves to unmeasured with its reason.

    files: the file list to record (default: every file in the directory, hashed now)."""
    reasons = {**card.unmeasured, **(unmeasured or {})}
    metrics = {k: v for k, v in card.metrics.items() if math.isfinite(v)}
    reasons = {k: reasons.get(k, "not finite") for k in card.metrics.keys() - metrics.keys()} | {
        k: why for k, why in reasons.items() if k not in metrics
    }
    files = _hash_files(directory) if files is None else files
    card = msgspec.structs.replace(
        card,
        metrics=metrics,
        unmeasured=dict(sorted(reasons.items())),
        files=files,
        bundle_id=_bundle_id(files),
    )
    atomic_write(directory / CARD_FILE, msgspec.json.format(msgspec.json.encode(card)) + b"\n")
    return card


def update_calibration(
    directory: Path,
    *,
    calibration: Calibration,
    metrics: dict[str, float],
    report: dict[str, Any],
    figures: dict[str, bytes],
    stage: dict[str, Any] | None = None,
) -> ModelCard:
    """Replace a valid bundle's calibration, figures and measured metrics; the card is rewritten last.

    stage: what the calibration was fitted on (recorded as the card's stages["calibrate"])."""
    card = verify_bundle(directory)
    try:
        (directory / CALIBRATION_FILE).write_bytes(
            msgspec.json.format(msgspec.json.encode(calibration)) + b"\n"
        )
        if figures:
            (directory / "figures").mkdir(exist_ok=True)
        for name, data in figures.items():
            (directory / "figures" / name).write_bytes(data)
        updated = msgspec.structs.replace(
            card,
            metrics={**card.metrics, **metrics},
            calibration_report=report,
            figures=tuple(sorted({*card.figures, *(f"figures/{n}" for n in figures)})),
            stages={**card.stages, **({"calibrate": stage} if stage is not None else {})},
        )
        return _write_card(directory, updated, unmeasured=report.get("unmeasured"))
    except OSError as e:
        msg = f"{directory}: cannot write the calibration ({e})"
        raise BundleError(msg) from None


def add_to_bundle(
    directory: Path,
    *,
    files: dict[str, bytes],
    metrics: dict[str, float] | None = None,
    stages: dict[str, Any] | None = None,
    trained_on: TrainedOn | None = None,
    unmeasured: Mapping[str, str] | None = None,
) -> ModelCard:
    """Add (or replace) files of a valid bundle and merge metrics and stage records; the card is rewritten last.

    A crash at any point leaves a loadable bundle: each file and the card are written whole
    (atomic_write); files the card lists are first dropped from it (the bundle without them is
    a valid one), so the card never names a file that is half written or not its hash.

    Args:
        files: relative path (e.g. "xgb/model.json") -> content; must stay inside the bundle.
        stages: what each added stage is (config, inputs, fitted parameters), merged by key.
        trained_on: the bars the bundle's fits saw (replaces the card's when given).
        unmeasured: why a metric given as NaN has no value (vlm_engine.metrics.unmeasured).
    """
    card = verify_bundle(directory)
    root = directory.resolve()
    for name in files:
        target = (directory / name).resolve()
        if name == CARD_FILE or not target.is_relative_to(root) or target == root:
            msg = f"{directory}: cannot add {name!r} to the bundle (not a file path inside it)"
            raise BundleError(msg)
    try:
        for stale in directory.rglob(f"*{PARTIAL}"):  # left by a crash in an earlier write
            stale.unlink()
        replaced = {name for name in files if name in card.files}
        if replaced:
            kept = {k: v for k, v in card.files.items() if k not in replaced}
            card = _write_card(directory, card, files=kept)
        for name, data in files.items():
            target = directory / name
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(target, data)
        updated = msgspec.structs.replace(
            card,
            metrics={**card.metrics, **(metrics or {})},
            stages={**card.stages, **(stages or {})},
            trained_on=trained_on or card.trained_on,
        )
        card = _write_card(directory, updated, unmeasured=unmeasured)
    except OSError as e:
        msg = f"{directory}: cannot add files to the bundle ({e})"
        raise BundleError(msg) from None
    log.info("bundle.updated", path=str(directory), bundle_id=card.bundle_id, added=sorted(files))
    return card


def check_files(directory: Path) -> ModelCard:
    """The cheap half of verify_bundle (no hashing, no torch): the card is readable, of this
    format, and every file it lists (and every required one) is there; returns the card."""
    card = read_card(directory)
    if card.format_version != FORMAT_VERSION:
        msg = (
            f"{directory}: bundle format {card.format_version}, this version reads {FORMAT_VERSION}"
        )
        raise BundleError(msg)
    missing = [name for name in REQUIRED if name not in card.files]
    missing += [name for name in card.files if not (directory / name).is_file()]
    if missing:
        names = sorted(set(missing))
        makers = sorted({maker(name) for name in names})
        msg = (
            f"{directory}: incomplete bundle, missing {', '.join(names)} (made by {'; '.join(makers)}); "
            "or rebuild the whole bundle with `vlmtrader model build --bars PATH --out DIR`"
        )
        raise BundleError(msg)
    return card


def verify_bundle(directory: Path, *, spec_hash: str | None = None) -> ModelCard:
    """Check the card, that every listed file exists with its sha256, and the chart spec; returns the card."""
    return _verified(directory, spec_hash)[0]


def _verified(directory: Path, spec_hash: str | None) -> tuple[ModelCard, ChartSpec]:
    """verify_bundle's checks; the card and the chart spec they read."""
    card = check_files(directory)
    for name, expected in card.files.items():
        if sha256_file(directory / name) != expected:
            msg = f"{directory}: corrupt bundle, {name} does not match its sha256 in {CARD_FILE}"
            raise BundleError(msg)
    if _bundle_id(card.files) != card.bundle_id:
        msg = f"{directory}: corrupt model card, bundle_id does not match its file list"
        raise BundleError(msg)
    spec = read_spec(directory)
    if spec.spec_hash() != card.spec_hash:
        msg = (
            f"{directory}: {SPEC_FILE} hashes to {spec.spec_hash()}, the card says {card.spec_hash}"
        )
        raise BundleError(msg)
    check_spec_hash(directory, card, spec_hash)
    return card, spec


def check_spec_hash(directory: Path, card: ModelCard, spec_hash: str | None) -> None:
    """BundleSpecMismatch when spec_hash is set and the card's chart spec is another one."""
    if spec_hash is not None and spec_hash != card.spec_hash:
        msg = (
            f"{directory}: bundle was trained on chart spec {card.spec_hash}, "
            f"the daemon renders {spec_hash}; rebuild the bundle or use its chart spec"
        )
        raise BundleSpecMismatch(msg)


def read_spec(directory: Path) -> ChartSpec:
    path = directory / SPEC_FILE
    try:
        return msgspec.json.decode(path.read_bytes(), type=ChartSpec)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError, ValueError) as e:
        msg = f"{path}: corrupt chart spec ({e})"
        raise BundleError(msg) from None


def load_bundle(directory: Path, *, spec_hash: str | None = None) -> Bundle:
    """Verify and load a bundle; refuses incomplete, corrupt or other-spec bundles with BundleError."""
    card, spec = _verified(directory, spec_hash)
    try:
        calibration = msgspec.json.decode(
            (directory / CALIBRATION_FILE).read_bytes(), type=Calibration
        )
    except (OSError, msgspec.DecodeError, msgspec.ValidationError) as e:
        msg = f"{directory / CALIBRATION_FILE}: corrupt calibration ({e})"
        raise BundleError(msg) from None
    try:
        from transformers.utils import logging as hf_logging

        from vlm_engine.clip.model import load_clip

        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        parts = load_clip(directory / CLIP_DIR)
    except ClipError as e:
        msg = f"{directory}: cannot load the CLIP model ({e})"
        raise BundleError(msg) from None
    parts.model.eval()
    log.info(
        "bundle.loaded", path=str(directory), bundle_id=card.bundle_id, spec_hash=card.spec_hash
    )
    return Bundle(path=directory, parts=parts, spec=spec, calibration=calibration, card=card)
