"""The model card: what a bundle is, what it was trained on and how well it does (model_card.json,
written last by vlm_engine/bundle/bundle.py once every file of the bundle is hashed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec

from vlm_engine.bundle.errors import BundleError
from vlm_engine.clip.data import PromptSet

FORMAT_VERSION = 1
CARD_FILE = "model_card.json"


class DatasetRef(msgspec.Struct, frozen=True, kw_only=True):
    """Which data the model was trained on."""

    source: str
    manifest_hash: str
    counts: dict[str, int] = msgspec.field(default_factory=dict)


class TrainedOn(msgspec.Struct, frozen=True, kw_only=True):
    """The bars every fit in the bundle saw: bar size, label horizon, symbols and period.

    start/end are epoch seconds of the first and last bar any fit (CLIP, calibration, XGBoost,
    fusion) read, label windows included; holdout_start is where the card's held-out figures
    begin (nothing was fitted on or after it), 0 when the card has no held-out part.
    """

    source: str
    bar_seconds: int
    horizon_bars: int
    symbols: tuple[str, ...] = ()
    start: int = 0
    end: int = 0
    holdout_start: int = 0


class ModelCard(msgspec.Struct, frozen=True, kw_only=True):
    """What a bundle is, how it was made and how well it does; files maps relative path -> sha256.

    metrics holds finite figures only; unmeasured maps a figure without a value to why (for
    example "direction_auc": "one class only"): JSON has no NaN.
    """

    format_version: int = FORMAT_VERSION
    bundle_id: str
    spec_hash: str
    base: str
    parameters: int
    prompts: PromptSet
    dataset: DatasetRef
    train_config: dict[str, Any] = msgspec.field(default_factory=dict)
    history: list[dict[str, Any]] = msgspec.field(default_factory=list)
    metrics: dict[str, float] = msgspec.field(default_factory=dict)
    unmeasured: dict[str, str] = msgspec.field(default_factory=dict)
    calibration_report: dict[str, Any] = msgspec.field(default_factory=dict)
    figures: tuple[str, ...] = ()
    created_at: str = ""
    stages: dict[str, Any] = msgspec.field(default_factory=dict)
    trained_on: TrainedOn | None = None
    files: dict[str, str] = msgspec.field(default_factory=dict)

    def figure(self, name: str, digits: int = 3) -> str:
        """A metric as text: its value, why it has none ("one class only"), or "-" if not measured."""
        if name in self.metrics:
            return f"{self.metrics[name]:.{digits}f}"
        return self.unmeasured.get(name, "-")


def read_card(directory: Path) -> ModelCard:
    """The bundle's model card, decoded and type-checked."""
    if not directory.is_dir():
        msg = f"{directory}: no such bundle directory"
        raise BundleError(msg)
    path = directory / CARD_FILE
    try:
        return msgspec.json.decode(path.read_bytes(), type=ModelCard)
    except FileNotFoundError:
        msg = f"{directory}: incomplete bundle, {CARD_FILE} is missing"
        raise BundleError(msg) from None
    except (OSError, msgspec.DecodeError, msgspec.ValidationError, ValueError) as e:
        msg = f"{path}: corrupt model card ({e})"
        raise BundleError(msg) from None
