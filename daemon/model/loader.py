"""The one loader: a model bundle directory -> a LoadedBundle (warm CLIP engine, XGBoost, fusion,
PCA and drift reference).

Every file is validated before anything is used (the card's sha256 list, then each file's
type); a bundle that is incomplete, corrupt, built for another chart spec or for windows the
daemon does not have is refused with BundleUnusable, one line naming the bundle and the cause.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import msgspec
import structlog

from daemon.errors import InputError
from daemon.model.vision import ClipVision
from strategy.bars import BarStoreConfig
from strategy.drift import DriftMonitor, DriftReference
from strategy.features import FeatureConfig, FeatureEngine
from strategy.fusion import FusionConfig, FusionEngine
from strategy.ml_scorer import MLScorer, ScorerMode, VisionModel
from vlm_engine.xgb.errors import XgbError
from vlm_engine.xgb.model import META_FILE, MODEL_FILE, XgbModel
from vlm_engine.xgb.pca import PcaParams

if TYPE_CHECKING:  # torch and transformers load only when a bundle does (rules mode starts fast)
    from vlm_engine.bundle import ModelCard
    from vlm_engine.clip.analogs import AnalogIndex
    from vlm_engine.infer import ChartEngine, InferenceConfig
    from vlm_engine.render import ChartSpec

log = structlog.get_logger("daemon.model")

XGB_DIR = "xgb"
# XGBoost on the technical features alone (no CLIP inputs): the "XGBoost-only" model of the
# comparisons and of scorer.mode xgb. Optional: bundles from `vlmtrader train xgb` lack it.
XGB_TECHNICAL_DIR = "xgb_technical"
FUSION_FILE = "fusion.json"
PCA_FILE = "pca.json"
TABULAR_FILES = (f"{XGB_DIR}/{MODEL_FILE}", f"{XGB_DIR}/{META_FILE}", FUSION_FILE)
REBUILD = (
    "rebuild it with `vlmtrader model build --bars PATH --out DIR` (your bars) "
    "or `vlmtrader model bootstrap --out DIR` (the simulated market)"
)
T = TypeVar("T")


class BundleUnusable(InputError):
    """The model bundle is missing, incomplete, corrupt or for another chart spec."""


class LoadedBundle(msgspec.Struct, frozen=True, kw_only=True):
    """A model bundle loaded and cross-checked: its warm CLIP engine, XGBoost models, fusion, PCA and
    drift references. scorer() builds an MLScorer over these shared models."""

    path: Path
    card: ModelCard
    engine: ChartEngine
    xgb: XgbModel
    features: FeatureConfig
    fusion: FusionConfig
    pca: PcaParams | None
    drift: DriftReference | None
    xgb_technical: XgbModel | None = None
    drift_technical: DriftReference | None = None
    # The training charts' analog index (None for bundles built before it existed); loaded here,
    # with the bundle, so nothing on the order path ever reads it from disk.
    analogs: AnalogIndex | None = None

    @property
    def bundle_id(self) -> str:
        return self.card.bundle_id

    @property
    def spec(self) -> ChartSpec:
        return self.engine.spec

    @property
    def spec_hash(self) -> str:
        return self.engine.spec.spec_hash()

    @property
    def bar_seconds(self) -> int:
        return int(self.xgb.meta.bar_seconds)

    @property
    def bars_needed(self) -> int:
        """Bars a window must hold for the chart and the features to be what training saw."""
        return max(self.spec.bars_needed, self.features.lookback)

    def scorer(
        self,
        *,
        mode: ScorerMode = "fused",
        fusion: FusionConfig | None = None,
        vision: VisionModel | None = None,
        name: str | None = None,
    ) -> MLScorer:
        """A fresh MLScorer (its own fusion and drift state) over the shared warm models.

        mode xgb uses the technical-only XGBoost when the bundle has one (so it needs no CLIP);
        xgb and clip trade on their own model's probability, whatever the fitted fusion weighs.
        """
        config = fusion or self.fusion
        xgb, drift = self.xgb, self.drift
        if mode == "xgb" and self.xgb_technical is not None:
            xgb, drift = self.xgb_technical, self.drift_technical
        if mode != "fused":
            config = config.alone(mode)
        monitor = DriftMonitor(reference=drift, config=config.drift) if drift is not None else None
        return MLScorer(
            features=FeatureEngine(config=self.features),
            fusion=FusionEngine(config=config),
            xgb=xgb,
            vision=vision or ClipVision(engine=self.engine),
            pca=self.pca,
            drift=monitor,
            mode=mode,
            name=name,
        )


def read_fusion(bundle: Path) -> FusionConfig:
    """A bundle's fusion.json, or the default fusion for an xgb/-only directory that has none
    (msgspec's DecodeError / ValidationError when the file is unreadable)."""
    path = Path(bundle) / FUSION_FILE
    if not path.exists():
        return FusionConfig()
    return msgspec.json.decode(path.read_bytes(), type=FusionConfig)


def _fail(path: Path, problem: str) -> BundleUnusable:
    return BundleUnusable(f"{path}: {problem}")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _decode(path: Path, name: str, kind: type[T], what: str) -> T:
    try:
        return msgspec.json.decode((path / name).read_bytes(), type=kind)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError, ValueError) as e:
        raise _fail(path, f"corrupt {what} in {name} ({_one_line(str(e))}); {REBUILD}") from None


def _read_card(path: Path) -> ModelCard:
    from vlm_engine.bundle import BundleError, read_card

    try:
        card = read_card(path)
    except BundleError as e:
        raise BundleUnusable(_one_line(str(e))) from None
    missing = [name for name in TABULAR_FILES if name not in card.files]
    if missing:
        raise _fail(
            path,
            f"incomplete bundle, missing {', '.join(missing)} (CLIP only, no XGBoost/fusion): "
            f"add them with `vlmtrader train xgb --dataset BARS --bundle {path}`, or {REBUILD}",
        )
    return card


def precheck_bundle(path: Path, *, spec_hash: str | None = None) -> ModelCard:
    """The checks that need neither torch nor hashing, so a daemon refuses a bundle in milliseconds
    before it warms one: the card, every file it lists on disk (XGBoost and fusion among them) and
    the chart spec it was trained on; BundleUnusable, one line, when any fails. The sha256 of every
    file is checked when the bundle loads (load_bundle)."""
    from vlm_engine.bundle import BundleError, check_files, check_spec_hash

    card = _read_card(path)
    try:
        check_files(path)
        check_spec_hash(path, card, spec_hash or None)
    except BundleError as e:
        raise BundleUnusable(_one_line(str(e))) from None
    return card


def load_engine(path: Path, *, spec_hash: str | None, inference: InferenceConfig) -> ChartEngine:
    """The bundle's CLIP model warm on the runtime inference asks for (vlm_engine.infer.load_engine,
    the one place an engine is built), any failure as BundleUnusable naming the bundle."""
    from vlm_engine.bundle import BundleError
    from vlm_engine.infer import load_engine as engine_on_runtime

    try:
        return engine_on_runtime(path, config=inference, spec_hash=spec_hash or None)
    except BundleError as e:
        raise BundleUnusable(_one_line(str(e))) from None
    except (OSError, RuntimeError, ValueError) as e:
        raise _fail(path, f"cannot load the CLIP model ({_one_line(str(e))})") from None


def _load_xgb(path: Path, directory: str, what: str) -> XgbModel:
    try:
        return XgbModel.load(path / directory)
    except XgbError as e:
        raise _fail(path, f"cannot load the {what} ({_one_line(str(e))}); {REBUILD}") from None


def _check_features(
    path: Path, card: ModelCard, xgb: XgbModel, features: FeatureConfig, pca: PcaParams | None
) -> None:
    """The xgb model's columns must be exactly what the scorer computes from this bundle's outputs."""
    if xgb.meta.bar_seconds <= 0:
        raise _fail(path, f"xgb/{META_FILE} has bar_seconds {xgb.meta.bar_seconds}")
    expected = list(FeatureEngine(config=features).names(xgb.meta.bar_seconds))
    if any(n.startswith("clip_") for n in xgb.feature_names):
        expected += ["clip_p_up", *(f"clip_{c}" for c in card.prompts.classes)]
        if pca is not None:
            expected += [f"clip_pc{i}" for i in range(len(pca.components))]
    if tuple(expected) != xgb.feature_names:
        diff = next(
            (
                f"column {i}: bundle {a!r}, computed {b!r}"
                for i, (a, b) in enumerate(zip(xgb.feature_names, expected, strict=False))
                if a != b
            ),
            f"bundle has {len(xgb.feature_names)} columns, computed {len(expected)}",
        )
        raise _fail(path, f"the xgb model's features do not match its feature config ({diff})")
    if pca is not None and any(len(row) != len(pca.mean) for row in pca.components):
        raise _fail(path, f"corrupt embedding PCA in {PCA_FILE} (component and mean sizes differ)")


def _drift_reference(path: Path, xgb: XgbModel) -> DriftReference | None:
    raw = xgb.meta.drift_reference
    if not raw:
        return None
    try:
        reference = msgspec.convert(raw, DriftReference)
    except msgspec.ValidationError as e:
        raise _fail(path, f"corrupt drift reference in xgb/{META_FILE} ({e})") from None
    want = (*xgb.feature_names, "confidence")
    if reference.names != want or len(reference.edges) != len(want):
        raise _fail(
            path,
            f"drift reference has {len(reference.names)} columns, the scorer observes {len(want)}",
        )
    return reference


def _load_analogs(path: Path, card: ModelCard) -> AnalogIndex | None:
    """The bundle's analog index when its card lists one (None for older bundles), else BundleUnusable."""
    from vlm_engine.bundle import BundleError
    from vlm_engine.clip.analogs import INDEX_FILE, AnalogIndex

    if INDEX_FILE not in card.files:
        return None
    try:
        return AnalogIndex.load(path)
    except BundleError as e:
        raise BundleUnusable(_one_line(str(e))) from None


def load_bundle(
    path: Path,
    *,
    spec_hash: str | None = None,
    inference: InferenceConfig | None = None,
) -> LoadedBundle:
    """Validate and load every part of a full bundle (CLIP warmed up); BundleUnusable when any is wrong."""
    from vlm_engine.infer import InferenceConfig

    path = Path(path)
    card = _read_card(path)
    engine = load_engine(path, spec_hash=spec_hash, inference=inference or InferenceConfig())
    xgb = _load_xgb(path, XGB_DIR, "XGBoost model")
    try:
        features = msgspec.convert(xgb.meta.feature_config, FeatureConfig)
    except (msgspec.ValidationError, ValueError) as e:
        raise _fail(path, f"corrupt feature config in xgb/{META_FILE} ({e})") from None
    fusion = _decode(path, FUSION_FILE, FusionConfig, "fusion parameters")
    uses_pca = any(n.startswith("clip_pc") for n in xgb.feature_names)
    if uses_pca and PCA_FILE not in card.files:
        raise _fail(
            path, f"incomplete bundle, missing {PCA_FILE} (the xgb model uses it); {REBUILD}"
        )
    pca = _decode(path, PCA_FILE, PcaParams, "embedding PCA") if uses_pca else None
    _check_features(path, card, xgb, features, pca)
    technical = None
    if f"{XGB_TECHNICAL_DIR}/{MODEL_FILE}" in card.files:
        technical = _load_xgb(path, XGB_TECHNICAL_DIR, "technical XGBoost model")
        if any(n.startswith("clip_") for n in technical.feature_names):
            raise _fail(path, f"{XGB_TECHNICAL_DIR}/ has CLIP columns; it must be technical only")
        _check_features(path, card, technical, features, None)
    return LoadedBundle(
        path=path,
        card=card,
        engine=engine,
        xgb=xgb,
        features=features,
        fusion=fusion,
        pca=pca,
        drift=_drift_reference(path, xgb),
        xgb_technical=technical,
        drift_technical=_drift_reference(path, technical) if technical is not None else None,
        analogs=_load_analogs(path, card),
    )


def xgb_only_scorer(path: Path) -> MLScorer:
    """An XGBoost-only scorer from a directory holding just xgb/ (and maybe fusion.json), as
    `vlmtrader train xgb` writes it: no model card, no CLIP (BundleUnusable when it needs CLIP)."""
    path = Path(path)
    xgb = _load_xgb(path, XGB_DIR, "XGBoost model")
    try:
        features = msgspec.convert(xgb.meta.feature_config, FeatureConfig)
        fusion = read_fusion(path)
    except (msgspec.ValidationError, msgspec.DecodeError, OSError, ValueError) as e:
        raise _fail(path, f"corrupt feature or fusion config ({_one_line(str(e))})") from None
    if any(n.startswith("clip_") for n in xgb.feature_names):
        raise _fail(path, "the xgb model needs CLIP features: give the full bundle directory")
    return MLScorer(
        features=FeatureEngine(config=features),
        fusion=FusionEngine(config=fusion.alone("xgb")),
        xgb=xgb,
        mode="xgb",
    )


def check_windows(models: LoadedBundle, bars: BarStoreConfig) -> None:
    """Refuse a bundle whose charts or features need longer windows than the daemon keeps."""
    if bars.window < models.bars_needed:
        raise _fail(
            models.path,
            f"the bundle needs windows of {models.bars_needed} bars (chart spec "
            f"{models.spec.bars_needed}, features {models.features.lookback}); "
            f"bars.window is {bars.window}",
        )


def check_bar_size(models: LoadedBundle, bars: BarStoreConfig) -> None:
    """Refuse a bundle trained on another bar size (the live daemon: its features mean other things)."""
    if bars.bar_seconds != models.xgb.meta.bar_seconds:
        raise _fail(
            models.path,
            f"the bundle was trained on {models.xgb.meta.bar_seconds} s bars, "
            f"bars.bar_seconds is {bars.bar_seconds}; build one from your bars with "
            "`vlmtrader model build --bars PATH --out DIR`",
        )


def bundle_failure(path: Path, error: BaseException) -> BundleUnusable:
    """Any failure to load a bundle as one line naming the bundle and the cause."""
    detail = " ".join(str(error).split()) or "no detail"
    return BundleUnusable(f"{path}: cannot load the bundle ({type(error).__name__}: {detail})")


__all__ = [
    "BundleUnusable",
    "LoadedBundle",
    "bundle_failure",
    "check_bar_size",
    "check_windows",
    "load_bundle",
    "load_engine",
    "precheck_bundle",
    "read_fusion",
    "xgb_only_scorer",
]
