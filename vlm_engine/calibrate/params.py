"""The calibration parameters a bundle stores and the inference engine applies."""

from __future__ import annotations

from typing import Annotated

import msgspec

PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]


class FoldStats(msgspec.Struct, frozen=True, kw_only=True):
    """Mean and standard deviation of one parameter over the k cross-validation folds."""

    mean: float
    std: float
    folds: tuple[float, ...] = ()


class Calibration(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Pattern probs = softmax(logits / pattern_temperature); p_up = sigmoid(direction_a * z + direction_b).

    Logits are logit_scale * cosine(image, prompt class); z is the up-minus-down direction logit.
    The identity (1, 1, 0) means uncalibrated.
    """

    pattern_temperature: PositiveFloat = 1.0
    direction_a: float = 1.0
    direction_b: float = 0.0
    n_bins: Annotated[int, msgspec.Meta(ge=2)] = 15
    fitted: bool = False
    cv_pattern_temperature: FoldStats | None = None
    cv_direction_a: FoldStats | None = None
    cv_direction_b: FoldStats | None = None
