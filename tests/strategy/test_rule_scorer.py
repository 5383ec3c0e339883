"""RuleScorer: TA-Lib candlestick patterns on the last bar, weighed by RSI and Bollinger context."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import numpy as np
import pytest

from strategy.bars import BarStore, BarStoreConfig, Window
from strategy.rule_scorer import ALL_PATTERNS, RuleScorer, RuleScorerConfig
from strategy.scoring import Scorer, neutral_signal
from strategy.types import Bar

T0 = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)
Candle = tuple[float, float, float, float]


def _window(candles: list[Candle], symbol: str = "X") -> Window:
    store = BarStore(config=BarStoreConfig(window=len(candles)))
    for i, (o, h, low, c) in enumerate(candles):
        bar = Bar(
            symbol=symbol,
            ts=T0 + timedelta(minutes=i),
            open=o,
            high=h,
            low=low,
            close=c,
            volume=1e3,
        )
        assert store.add(bar) is None
    window = store.window(symbol)
    assert window is not None
    return window


def _trend(n: int, direction: int, start: float = 100.0, step: float = 0.4) -> list[Candle]:
    """n candles all closing `direction` (+1 up, -1 down), bodies of varying size, short wicks."""
    out: list[Candle] = []
    price = start
    for i in range(n):
        close = price + direction * step * (1 + 0.2 * (i % 3))
        out.append((price, max(price, close) + 0.05, min(price, close) - 0.05, close))
        price = close
    return out


def _bullish_engulfing_after_decline() -> list[Candle]:
    candles = _trend(62, -1)
    p = candles[-1][3]
    candles.append((p + 0.1, p + 0.15, p - 0.35, p - 0.3))  # small red
    candles.append((p - 0.4, p + 0.6, p - 0.45, p + 0.55))  # large green engulfing it
    return candles


def _bearish_engulfing_after_advance() -> list[Candle]:
    candles = _trend(62, +1)
    p = candles[-1][3]
    candles.append((p - 0.1, p + 0.35, p - 0.15, p + 0.3))  # small green
    candles.append((p + 0.4, p + 0.45, p - 0.6, p - 0.55))  # large red engulfing it
    return candles


def _random_walk(n: int, seed: int) -> list[Candle]:
    rng = np.random.default_rng(seed)
    out: list[Candle] = []
    price = 100.0
    for _ in range(n):
        close = price * (1 + rng.normal(0, 0.002))
        high = max(price, close) * (1 + abs(rng.normal(0, 0.001)))
        low = min(price, close) * (1 - abs(rng.normal(0, 0.001)))
        out.append((price, high, low, close))
        price = close
    return out


@pytest.fixture
def scorer() -> RuleScorer:
    return RuleScorer(config=RuleScorerConfig())


def test_score_when_bullish_engulfing_after_decline_then_up_with_reasons(
    scorer: RuleScorer,
) -> None:
    window = _window(_bullish_engulfing_after_decline())
    [signal] = scorer.score([window])
    assert signal.p_up > 0.5
    assert signal.confidence > 0.3
    assert "bullish_engulfing" in signal.reasons
    assert "rsi_oversold" in signal.reasons
    assert signal.symbol == "X"
    assert signal.ts == window.ts
    assert signal.scorer == "rules"


def test_score_when_bearish_engulfing_after_advance_then_down_with_reasons(
    scorer: RuleScorer,
) -> None:
    [signal] = scorer.score([_window(_bearish_engulfing_after_advance())])
    assert signal.p_up < 0.5
    assert signal.confidence > 0.3
    assert "bearish_engulfing" in signal.reasons
    assert "rsi_overbought" in signal.reasons


def test_score_when_context_agrees_then_stronger_than_without_context() -> None:
    window = _window(_bullish_engulfing_after_decline())
    with_context = RuleScorer(config=RuleScorerConfig())
    without = RuleScorer(config=RuleScorerConfig(context_boost=0.0, context_penalty=0.0))
    [strong] = with_context.score([window])
    [plain] = without.score([window])
    assert strong.confidence > plain.confidence
    assert strong.p_up > plain.p_up > 0.5


def test_score_when_pattern_fights_context_then_weaker_than_without_context() -> None:
    # A bullish engulfing at the top of an advance: RSI overbought argues against it.
    candles = _trend(62, +1)
    p = candles[-1][3]
    candles.append((p + 0.1, p + 0.15, p - 0.35, p - 0.3))
    candles.append((p - 0.4, p + 0.6, p - 0.45, p + 0.55))
    window = _window(candles)
    [against] = RuleScorer(config=RuleScorerConfig(min_strength=0.0)).score([window])
    [plain] = RuleScorer(config=RuleScorerConfig(context_penalty=0.0)).score([window])
    assert "bullish_engulfing" in against.reasons
    assert "rsi_overbought" in against.reasons
    assert against.confidence < plain.confidence


def test_score_when_no_pattern_on_last_bar_then_neutral(scorer: RuleScorer) -> None:
    window = _window(_trend(64, +1))
    [signal] = scorer.score([window])
    assert signal == neutral_signal(window, "rules")
    assert signal.p_up == 0.5
    assert signal.confidence == 0.0


def test_score_when_random_walk_windows_then_mostly_neutral_and_bounded(scorer: RuleScorer) -> None:
    windows = [_window(_random_walk(64, seed), f"S{seed}") for seed in range(150)]
    signals = scorer.score(windows)
    assert len(signals) == len(windows)
    assert [s.symbol for s in signals] == [w.symbol for w in windows]
    tradable = sum(s.confidence >= 0.3 for s in signals)
    assert tradable < 0.5 * len(signals)
    assert all(0.0 <= s.p_up <= 1.0 and 0.0 <= s.confidence <= 1.0 for s in signals)
    assert all((s.p_up == 0.5) == (s.confidence == 0.0) for s in signals)


def test_score_when_called_twice_or_alone_then_same_signals(scorer: RuleScorer) -> None:
    windows = [_window(_random_walk(64, seed), f"S{seed}") for seed in range(60)]
    windows.append(_window(_bullish_engulfing_after_decline(), "BULL"))
    first = scorer.score(windows)
    again = RuleScorer(config=RuleScorerConfig()).score(windows)
    alone = [scorer.score([w])[0] for w in windows]
    assert first == again == alone
    assert any(s.confidence > 0 for s in first)


def test_score_when_windows_of_mixed_lengths_then_each_as_scored_alone(scorer: RuleScorer) -> None:
    """Windows of different lengths in one batch: each gets what scoring it alone gives, reasons
    and context included."""
    bull = _bullish_engulfing_after_decline()
    bear = _bearish_engulfing_after_advance()
    windows = [
        _window(bull, "FULL"),
        _window(_random_walk(30, seed=1), "W30"),
        _window(bull[-20:], "SHORT_CONTEXT"),  # >= the patterns' lookback, < context_bars
        _window(bear[-45:], "BEAR45"),
        _window(bull[-8:], "TINY"),  # < the patterns' lookback: scored on its own
        _window(_random_walk(64, seed=2), "W64"),
    ]
    batch = scorer.score(windows)
    alone = [scorer.score([w])[0] for w in windows]
    assert batch == alone
    assert [s.symbol for s in batch] == [w.symbol for w in windows]
    fired = {s.symbol: s for s in batch if s.reasons}
    assert fired["FULL"].p_up > 0.5
    assert fired["SHORT_CONTEXT"].reasons[0] == "bullish_engulfing"
    assert fired["BEAR45"].p_up < 0.5
    assert fired["TINY"].reasons[0] == "bullish_engulfing"


def test_score_when_pattern_disabled_then_not_reported() -> None:
    window = _window(_bullish_engulfing_after_decline())
    only_hammer = RuleScorer(config=RuleScorerConfig(patterns=("hammer",)))
    [signal] = only_hammer.score([window])
    assert "bullish_engulfing" not in signal.reasons
    assert signal.confidence == 0.0


def test_score_when_weight_zero_then_pattern_ignored() -> None:
    window = _window(_bullish_engulfing_after_decline())
    [signal] = RuleScorer(config=RuleScorerConfig(weights={"engulfing": 0.0})).score([window])
    assert signal.confidence == 0.0


def test_score_when_window_shorter_than_pattern_lookback_then_scored_on_its_own() -> None:
    candles = _bullish_engulfing_after_decline()[-8:]
    scorer = RuleScorer(config=RuleScorerConfig(patterns=("engulfing",)))
    [signal] = scorer.score([_window(candles)])
    assert signal.p_up > 0.5
    assert signal.reasons[0] == "bullish_engulfing"


def test_score_when_no_windows_then_empty(scorer: RuleScorer) -> None:
    assert scorer.score([]) == []


def test_rule_scorer_when_built_then_is_a_non_blocking_scorer(scorer: RuleScorer) -> None:
    assert isinstance(scorer, Scorer)
    assert scorer.name == "rules"
    assert scorer.blocking is False
    assert scorer.pattern_bars <= 20


def test_config_when_every_pattern_enabled_by_default_then_all_twelve() -> None:
    assert set(RuleScorerConfig().patterns) == set(ALL_PATTERNS)
    assert len(ALL_PATTERNS) == 12


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ({"patterns": ["doji"]}, r"\$\.patterns\[0\]"),
        ({"weights": {"engulfing": -1}}, r"\$\.weights"),
        ({"rsi_period": 1}, r"\$\.rsi_period"),
        ({"max_edge": 0.7}, r"\$\.max_edge"),
        ({"rsi_oversold": 70, "rsi_overbought": 60}, "rsi_oversold"),
        ({"bb_period": 50}, "context_bars"),
        ({"unknown": 1}, "unknown"),
    ],
)
def test_config_when_value_invalid_then_validation_error_names_it(
    raw: dict[str, object], match: str
) -> None:
    with pytest.raises(msgspec.ValidationError, match=match):
        msgspec.convert(raw, RuleScorerConfig)


def test_flat_closes_when_flat_moving_and_short_windows_then_matches_each_window_alone() -> None:
    """The batched flat-context check gives, per window, what two reductions on its closes give."""
    scorer = RuleScorer(config=RuleScorerConfig())
    flat = _window([(100.0, 100.2, 99.8, 100.0)] * 64)
    moving = _window(_random_walk(64, seed=5))
    short = _window(_random_walk(20, seed=6), symbol="Y")
    got = scorer._flat_closes([flat, moving, short, flat])
    assert got == [True, False, None, True]
    context = moving.close[-scorer.config.context_bars :]
    assert got[1] == (context.max() == context.min())
