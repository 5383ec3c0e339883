from __future__ import annotations

import msgspec
import numpy as np
import pytest

from tests.vlm_engine.synth import candles, random_window
from vlm_engine.labels import (
    OPPOSITE,
    PATTERN_NAMES,
    ChartFacts,
    ParaphraseFailed,
    TextConfig,
    TextGenerator,
    chart_facts,
    detect_patterns,
    direction_index,
    forward_returns,
)


def _trend(n: int, direction: int, start: float = 100.0) -> list[tuple[float, float, float, float]]:
    rows, p = [], start
    for _ in range(n):
        o, c = p, p + direction
        rows.append((o, max(o, c) + 0.2, min(o, c) - 0.2, c))
        p = c
    return rows


DOWN = _trend(12, -1)  # last bar 89 -> 88
UP = _trend(12, 1)  # last bar 111 -> 112
LONG_BLACK = (88.0, 88.1, 85.9, 86.0)
LONG_WHITE = (112.0, 114.1, 111.9, 114.0)
SEQUENCES = {
    "bullish_engulfing": [*DOWN, (87.5, 88.2, 86.8, 87.0), (86.8, 88.3, 86.6, 88.1)],
    "bearish_engulfing": [*UP, (112.5, 113.2, 112.3, 113.0), (113.2, 113.4, 111.7, 111.9)],
    "hammer": [*DOWN, (87.0, 87.32, 85.0, 87.3)],
    "hanging_man": [*UP, (112.7, 113.02, 110.7, 113.0)],
    "inverted_hammer": [*DOWN, (87.0, 89.0, 86.98, 87.3)],
    "shooting_star": [*UP, (113.0, 115.0, 112.68, 112.7)],
    "doji": [*DOWN, (87.9, 88.6, 87.2, 87.92)],
    "dragonfly_doji": [*DOWN, (87.9, 87.91, 86.5, 87.9)],
    "gravestone_doji": [*UP, (112.1, 113.5, 112.09, 112.1)],
    "morning_star": [*DOWN, LONG_BLACK, (85.5, 85.7, 85.2, 85.4), (85.6, 87.6, 85.5, 87.5)],
    "evening_star": [*UP, LONG_WHITE, (114.5, 114.8, 114.3, 114.6), (114.4, 114.5, 112.4, 112.5)],
    "three_white_soldiers": [
        *DOWN,
        (88.0, 89.55, 87.9, 89.5),
        (89.0, 90.55, 88.9, 90.5),
        (90.0, 91.55, 89.9, 91.5),
    ],
    "three_black_crows": [
        *UP,
        LONG_WHITE,
        (113.8, 113.85, 112.3, 112.4),
        (112.6, 112.65, 111.1, 111.2),
        (111.4, 111.45, 109.9, 110.0),
    ],
    "piercing_line": [*DOWN, LONG_BLACK, (85.5, 87.6, 85.4, 87.4)],
    "dark_cloud_cover": [*UP, LONG_WHITE, (114.5, 114.6, 112.4, 112.6)],
    "bullish_harami": [*DOWN, LONG_BLACK, (86.6, 87.0, 86.5, 86.9)],
    "bearish_harami": [*UP, LONG_WHITE, (113.4, 113.5, 113.0, 113.1)],
}


def test_sequences_when_listed_then_cover_every_pattern() -> None:
    assert set(SEQUENCES) == set(PATTERN_NAMES)


@pytest.mark.parametrize("name", sorted(SEQUENCES))
def test_detect_patterns_when_hand_built_sequence_then_pattern_on_last_bar(name: str) -> None:
    hits = detect_patterns(candles(SEQUENCES[name]), recent_bars=1)
    assert name in [h.name for h in hits]
    assert all(h.bars_ago == 0 for h in hits)
    if name in OPPOSITE:
        assert OPPOSITE[name] not in [h.name for h in hits]


def test_detect_patterns_when_plain_trend_then_no_reversal_patterns() -> None:
    hits = detect_patterns(candles(DOWN), recent_bars=3)
    assert not {"bullish_engulfing", "hammer", "morning_star", "piercing_line"} & {
        h.name for h in hits
    }


def test_chart_facts_when_engulfing_after_decline_then_downtrend_and_negative_run() -> None:
    facts = chart_facts(candles(SEQUENCES["bullish_engulfing"]))
    assert facts.pattern_names[0] == "bullish_engulfing"
    assert facts.trend == "down"
    assert facts.trend_strength > 0.5
    assert facts.prior_run <= -3
    assert chart_facts(candles(_trend(30, -1))).rsi_zone == "oversold"
    assert chart_facts(candles(_trend(30, 1))).rsi_zone == "overbought"


def test_chart_facts_when_last_volume_triple_then_heavy() -> None:
    w = candles(SEQUENCES["hammer"])
    volume = w.volume.copy()
    volume[-1] *= 3
    facts = chart_facts(msgspec.structs.replace(w, volume=volume))
    assert facts.volume_level == "heavy"
    assert facts.volume_ratio == pytest.approx(3.0)


def test_describe_when_seeded_then_deterministic_distinct_and_mentions_pattern() -> None:
    facts = chart_facts(candles(SEQUENCES["bullish_engulfing"]))
    texts = TextGenerator(config=TextConfig(seed=1)).describe(facts)
    again = TextGenerator(config=TextConfig(seed=1)).describe(facts)
    assert texts == again
    assert len(texts) == 4
    assert len({t.text for t in texts}) == 4
    assert all("bullish engulfing" in t.text.lower() for t in texts)
    assert all(0.0 <= t.confidence <= 1.0 for t in texts)


def test_describe_when_seed_changes_then_texts_vary() -> None:
    facts = chart_facts(candles(SEQUENCES["bullish_engulfing"]))
    variants = {
        tuple(t.text for t in TextGenerator(config=TextConfig(seed=s)).describe(facts))
        for s in range(8)
    }
    assert len(variants) > 1
    words = " ".join(" ".join(v) for v in variants).lower()
    assert "decline" in words or "falling" in words


def test_describe_when_reversal_after_opposite_move_then_more_confident_than_after_same_move() -> (
    None
):
    after_decline = chart_facts(candles(SEQUENCES["bullish_engulfing"]))
    after_rally = msgspec.structs.replace(after_decline, trend="up", prior_run=5)
    gen = TextGenerator()
    assert gen.describe(after_decline)[0].confidence > gen.describe(after_rally)[0].confidence


@pytest.mark.parametrize(
    ("name", "wrong"), [("bullish_engulfing", "bearish engulfing"), ("hammer", "hanging man")]
)
def test_negatives_when_pattern_then_opposite_pattern_and_wrong_trend(
    name: str, wrong: str
) -> None:
    facts = chart_facts(candles(SEQUENCES[name]))
    gen = TextGenerator()
    negatives = gen.negatives(facts)
    rules = {n.rule: n.text.lower() for n in negatives}
    assert wrong in rules["opposite_pattern"]
    assert any(w in rules["wrong_trend"] for w in ("rally", "advance", "climb", "rise", "rising"))
    assert all(n.kind == "negative" and n.confidence == 0.0 for n in negatives)
    assert not {n.text for n in negatives} & {p.text for p in gen.describe(facts)}


def test_negatives_when_no_pattern_and_trend_then_flipped_trend() -> None:
    facts = chart_facts(candles(_trend(30, 1)))
    facts = msgspec.structs.replace(facts, patterns=())
    negatives = TextGenerator().negatives(facts)
    flipped = [n for n in negatives if n.rule == "flipped_trend"]
    assert flipped
    assert any(w in flipped[0].text.lower() for w in ("lower", "downtrend", "falling"))


def test_describe_when_random_charts_then_every_chart_gets_texts() -> None:
    gen = TextGenerator()
    for seed in range(20):
        facts = chart_facts(random_window(seed=seed))
        assert isinstance(facts, ChartFacts)
        labels = gen.describe(facts)
        assert labels
        assert all(label.text.endswith(".") and label.text[0].isupper() for label in labels)


def test_paraphrase_when_hook_works_fails_or_refuses_then_fallback_counted() -> None:
    facts = chart_facts(candles(SEQUENCES["hammer"]))
    ok = TextGenerator(paraphrase=lambda s: "In other words: " + s)
    labels = ok.describe(facts)
    assert [label.kind for label in labels].count("paraphrase") == 4
    assert ok.paraphrase_stats == {"ok": 4, "fallback": 0}

    def boom(_: str) -> str:
        raise ParaphraseFailed("timeout")

    failing = TextGenerator(paraphrase=boom)
    assert [label.kind for label in failing.describe(facts)].count("paraphrase") == 0
    assert failing.paraphrase_stats == {"ok": 0, "fallback": 4}
    refusing = TextGenerator(paraphrase=lambda s: "I'm sorry, I can't help with that.")
    assert all(label.kind == "pattern" for label in refusing.describe(facts))
    assert refusing.paraphrase_stats["fallback"] == 4


def test_outcome_when_horizon_then_returns_and_dead_band_classes() -> None:
    close = np.array([100.0, 101.0, 100.0, 100.05, 99.0, 99.0])
    r = forward_returns(close, 2)
    assert r[0] == pytest.approx(0.0)
    assert r[1] == pytest.approx(100.05 / 101 - 1)
    assert np.isnan(r[-2:]).all()
    assert [direction_index(x, 0.001) for x in (0.002, 0.0005, -0.0005, -0.002)] == [2, 1, 1, 0]
    with pytest.raises(ValueError, match="not finite"):
        direction_index(float("nan"), 0.001)


def test_outcome_text_when_direction_then_matches() -> None:
    facts = chart_facts(random_window(seed=1))
    label = TextGenerator().outcome(facts, "up", 5)
    assert "5" in label.text
    assert label.kind == "outcome"
