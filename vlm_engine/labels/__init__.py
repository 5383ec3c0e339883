"""Text labels for charts: TA-Lib pattern detection, context, templated texts, hard negatives, outcomes."""

from __future__ import annotations

from vlm_engine.labels.facts import ChartFacts, FactsConfig, chart_facts
from vlm_engine.labels.outcome import DIRECTIONS, OutcomeConfig, direction_index, forward_returns
from vlm_engine.labels.patterns import (
    OPPOSITE,
    PATTERN_NAMES,
    PATTERNS,
    PatternHit,
    detect_patterns,
)
from vlm_engine.labels.text import (
    LABEL_VERSION,
    Label,
    ParaphraseConfig,
    ParaphraseFailed,
    TextConfig,
    TextGenerator,
    pattern_confidence,
    usable_paraphrase,
)

__all__ = [
    "DIRECTIONS",
    "LABEL_VERSION",
    "OPPOSITE",
    "PATTERNS",
    "PATTERN_NAMES",
    "ChartFacts",
    "FactsConfig",
    "Label",
    "OutcomeConfig",
    "ParaphraseConfig",
    "ParaphraseFailed",
    "PatternHit",
    "TextConfig",
    "TextGenerator",
    "chart_facts",
    "detect_patterns",
    "direction_index",
    "forward_returns",
    "pattern_confidence",
    "usable_paraphrase",
]
