"""Texts about a chart: varied descriptions with confidences, hard negatives, and outcome texts.

Grammar: a sentence is a head (the most recent pattern, or the trend when there is none)
plus modifiers (prior run, trend, volume, RSI, MACD, Bollinger, volatility), each phrase
drawn from synonyms; the modifiers are subsampled and shuffled, and one may be fronted
("After a three-bar decline, a hammer forms on heavy volume."). Randomness comes from a
generator seeded by (seed, symbol, ts), so a chart's texts do not depend on batch order.

Hard negatives (`negatives`), by rule, in this order of preference:
  1. opposite_pattern: the head pattern swapped for its similar-but-wrong twin
     (bullish <-> bearish engulfing, hammer <-> hanging man, morning <-> evening star, ...);
  2. wrong_trend: the same pattern after the opposite prior move / in the opposite trend;
  3. flipped_context: heavy <-> light volume, oversold <-> overbought, MACD cross flipped;
  4. flipped_trend (no pattern): the trend sentence with the direction reversed.
Each rule yields at most one text per sample; `max_negatives` are kept in rule order.

Over 400 lines: the phrase tables and the grammar that draws from them change together
(LABEL_VERSION pins both); apart, one would change without the other.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Annotated, Final, Literal

import msgspec
import numpy as np

from vlm_engine.labels.facts import ChartFacts
from vlm_engine.labels.patterns import BY_NAME, OPPOSITE, PatternHit

LABEL_VERSION: Final = "1"

LabelKind = Literal["pattern", "context", "outcome", "paraphrase", "negative"]

_NAMES: Final[dict[str, tuple[str, ...]]] = {
    "bullish_engulfing": (
        "bullish engulfing",
        "bullish engulfing pattern",
        "bullish engulfing candle",
    ),
    "bearish_engulfing": (
        "bearish engulfing",
        "bearish engulfing pattern",
        "bearish engulfing candle",
    ),
    "hammer": ("hammer", "hammer candle"),
    "inverted_hammer": ("inverted hammer", "inverted hammer candle"),
    "hanging_man": ("hanging man", "hanging man candle"),
    "shooting_star": ("shooting star", "shooting star candle"),
    "doji": ("doji", "doji candle"),
    "dragonfly_doji": ("dragonfly doji",),
    "gravestone_doji": ("gravestone doji",),
    "morning_star": ("morning star", "morning star pattern"),
    "evening_star": ("evening star", "evening star pattern"),
    "three_white_soldiers": ("three white soldiers",),
    "three_black_crows": ("three black crows",),
    "piercing_line": ("piercing line", "piercing pattern"),
    "dark_cloud_cover": ("dark cloud cover",),
    "bullish_harami": ("bullish harami",),
    "bearish_harami": ("bearish harami",),
}
_NUMBERS: Final = (
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
)
_UNITS: Final[dict[int, str]] = {3600: "hour", 86400: "day", 604800: "week"}
_DECLINE: Final = ("decline", "drop", "selloff", "slide")
_RALLY: Final = ("rally", "advance", "climb", "rise")
_TREND: Final[dict[str, tuple[str, ...]]] = {
    "up": ("in an uptrend", "during an uptrend", "within a rising market"),
    "down": ("in a downtrend", "during a downtrend", "within a falling market"),
    "sideways": ("in a sideways range", "in a flat market", "while price moves sideways"),
}
_VOLUME: Final[dict[str, tuple[str, ...]]] = {
    "heavy": ("on heavy volume", "on high volume", "with strong volume"),
    "light": ("on light volume", "on thin volume", "with weak volume"),
}
_RSI: Final[dict[str, tuple[str, ...]]] = {
    "oversold": ("with RSI oversold", "while RSI is in oversold territory"),
    "overbought": ("with RSI overbought", "while RSI is in overbought territory"),
}
_MACD: Final[dict[str, tuple[str, ...]]] = {
    "bullish": ("as MACD crosses above its signal line", "with a bullish MACD crossover"),
    "bearish": ("as MACD crosses below its signal line", "with a bearish MACD crossover"),
}
_BANDS: Final[dict[str, tuple[str, ...]]] = {
    "above_upper": ("above the upper Bollinger band", "outside the upper band"),
    "below_lower": ("below the lower Bollinger band", "outside the lower band"),
}
_SQUEEZE: Final = ("during a Bollinger squeeze", "as the Bollinger bands tighten")
_VOLATILITY: Final[dict[str, tuple[str, ...]]] = {
    "high": ("in a volatile market", "amid high volatility"),
    "low": ("in a quiet market", "amid low volatility"),
}
_VERBS: Final = ("forms", "appears", "prints", "shows up")
_OUTCOME: Final[dict[str, tuple[str, ...]]] = {
    "up": (
        "price rises over the next {h} bars",
        "the next {h} bars close higher",
        "an advance follows over {h} bars",
    ),
    "down": (
        "price falls over the next {h} bars",
        "the next {h} bars close lower",
        "a decline follows over {h} bars",
    ),
    "flat": (
        "price goes nowhere over the next {h} bars",
        "the next {h} bars stay flat",
        "price stalls for {h} bars",
    ),
}
_FLIP: Final[dict[str, str]] = {
    "up": "down",
    "down": "up",
    "heavy": "light",
    "light": "heavy",
    "oversold": "overbought",
    "overbought": "oversold",
    "bullish": "bearish",
    "bearish": "bullish",
    "above_upper": "below_lower",
    "below_lower": "above_upper",
}


class Label(msgspec.Struct, frozen=True, kw_only=True):
    """One text about a chart; confidence in [0, 1]; rule names the hard-negative rule."""

    text: str
    confidence: float
    kind: LabelKind
    rule: str = ""


class TextConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How many texts per chart and how many modifiers each may carry."""

    texts_per_chart: Annotated[int, msgspec.Meta(ge=1, le=32)] = 4
    max_negatives: Annotated[int, msgspec.Meta(ge=0, le=8)] = 3
    max_modifiers: Annotated[int, msgspec.Meta(ge=0, le=6)] = 3
    seed: Annotated[int, msgspec.Meta(ge=0)] = 0


class ParaphraseConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """An OpenAI-compatible chat endpoint that paraphrases template texts; the key comes from env."""

    url: Annotated[str, msgspec.Meta(pattern=r"^https?://")]
    model: str = "gpt-4o-mini"
    key_env: str = "VLMTRADER_LLM_KEY"
    timeout_seconds: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    cache_dir: str = "paraphrase-cache"
    temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] = 0.0


class _Modifier(msgspec.Struct, frozen=True, kw_only=True):
    key: str
    value: str
    phrase: str


Paraphraser = Callable[[str], str]


class ParaphraseFailed(Exception):
    """Raised by a paraphrase hook (timeout, bad response, refusal): the template text is kept."""


class TextGenerator:
    """Templated descriptions of ChartFacts; deterministic for a given seed, symbol and ts."""

    def __init__(
        self, *, config: TextConfig | None = None, paraphrase: Paraphraser | None = None
    ) -> None:
        self.config = config or TextConfig()
        self._paraphrase = paraphrase
        self.paraphrase_stats: dict[str, int] = {"ok": 0, "fallback": 0}

    def _rng(self, facts: ChartFacts, salt: str) -> np.random.Generator:
        key = f"{self.config.seed}|{facts.symbol}|{facts.ts}|{salt}".encode()
        return np.random.default_rng(int.from_bytes(hashlib.sha256(key).digest()[:8], "little"))

    def describe(self, facts: ChartFacts) -> tuple[Label, ...]:
        """Several varied positive descriptions (distinct texts), then their paraphrases if hooked."""
        out = self._templates(facts)
        if self._paraphrase is not None:
            out += self._paraphrases(out)
        return tuple(out)

    def _templates(self, facts: ChartFacts) -> list[Label]:
        rng = self._rng(facts, "describe")
        head = facts.patterns[0] if facts.patterns else None
        confidence = pattern_confidence(facts, head) if head else trend_confidence(facts)
        kind: LabelKind = "pattern" if head else "context"
        out: list[Label] = []
        seen: set[str] = set()
        for _ in range(self.config.texts_per_chart * 4):
            if len(out) >= self.config.texts_per_chart:
                break
            text = self._sentence(
                facts, head, rng, _modifiers(facts, rng, self.config.max_modifiers)
            )
            if text not in seen:
                seen.add(text)
                out.append(Label(text=text, confidence=confidence, kind=kind))
        return out

    def negatives(self, facts: ChartFacts) -> tuple[Label, ...]:
        """Hard negatives: similar texts that contradict the chart (see the module docstring)."""
        rng = self._rng(facts, "negatives")
        head = facts.patterns[0] if facts.patterns else None
        mods = _modifiers(facts, rng, None)
        out: list[Label] = []
        if (
            head is not None
            and head.name in OPPOSITE
            and OPPOSITE[head.name] not in facts.pattern_names
        ):
            wrong = PatternHit(
                name=OPPOSITE[head.name],
                direction=-head.direction,
                strength=head.strength,
                bars_ago=0,
            )
            out.append(self._negative(self._sentence(facts, wrong, rng, mods), "opposite_pattern"))
        if head is not None:
            move = _move_modifier(_flipped_move(facts), rng)
            if move is not None:
                out.append(self._negative(self._sentence(facts, head, rng, [move]), "wrong_trend"))
        context = [m for m in mods if m.key in ("volume", "rsi", "macd", "bands")]
        if context:
            m = context[0]
            flip = _flip_modifier(m, rng)
            if flip is not None:
                out.append(
                    self._negative(self._sentence(facts, head, rng, [flip]), "flipped_context")
                )
        if head is None and facts.trend != "sideways":
            out.append(self._negative(_trend_sentence(_flipped_move(facts), rng), "flipped_trend"))
        positives = {label.text for label in self._templates(facts)}
        return tuple(label for label in out if label.text not in positives)[
            : self.config.max_negatives
        ]

    def outcome(self, facts: ChartFacts, direction: str, horizon: int) -> Label:
        """The forward-outcome text ("price rises over the next 5 bars")."""
        rng = self._rng(facts, "outcome")
        template = _OUTCOME[direction][int(rng.integers(len(_OUTCOME[direction])))]
        return Label(text=template.format(h=horizon), confidence=1.0, kind="outcome")

    def _negative(self, text: str, rule: str) -> Label:
        return Label(text=text, confidence=0.0, kind="negative", rule=rule)

    def _sentence(
        self,
        facts: ChartFacts,
        head: PatternHit | None,
        rng: np.random.Generator,
        mods: list[_Modifier],
    ) -> str:
        if head is None:
            body = _trend_sentence(facts, rng)
            phrases = [m.phrase for m in mods if m.key not in ("trend", "run")]
            return _finish(" ".join([body, *phrases]))
        name = _pick(rng, _NAMES[head.name])
        article = _article(name)
        phrases = [m.phrase for m in mods]
        form = int(rng.integers(3))
        if form == 0 or not phrases:
            return _finish(" ".join([name, *phrases]))
        if form == 1:
            return _finish(
                ", ".join([phrases[0], f"{article} {name} {_pick(rng, _VERBS)}"])
                + _tail(phrases[1:])
            )
        return _finish(f"{article} {name} {_pick(rng, _VERBS)}" + _tail(phrases))

    def _paraphrases(self, labels: list[Label]) -> list[Label]:
        assert self._paraphrase is not None
        out: list[Label] = []
        for label in labels:
            try:
                text = self._paraphrase(label.text)
            except (ParaphraseFailed, ValueError, OSError, TimeoutError):
                self.paraphrase_stats["fallback"] += 1
                continue
            if not usable_paraphrase(text):
                self.paraphrase_stats["fallback"] += 1
                continue
            self.paraphrase_stats["ok"] += 1
            out.append(
                Label(text=text.strip(), confidence=label.confidence * 0.9, kind="paraphrase")
            )
        return out


def usable_paraphrase(text: object) -> bool:
    """A non-empty, not-too-long answer that is not a refusal."""
    if not isinstance(text, str):
        return False
    t = text.strip().lower()
    refusals = ("i can't", "i cannot", "i'm sorry", "as an ai", "i am unable")
    return 3 <= len(t) <= 400 and not any(r in t for r in refusals)


def pattern_confidence(facts: ChartFacts, head: PatternHit) -> float:
    """Detector strength and context agreement: a reversal after the opposite move scores highest."""
    strength = min(head.strength, 1.0)
    spec = BY_NAME[head.name]
    move = np.sign(facts.prior_run) if abs(facts.prior_run) >= 2 else 0
    trend = {"up": 1, "down": -1, "sideways": 0}[facts.trend]
    if spec.direction == 0 or not spec.reversal:
        agreement = 0.5
    else:
        # a reversal pattern agrees with a prior move / trend against its direction
        votes = [-spec.direction * move, -spec.direction * trend]
        agreement = 0.5 + 0.25 * float(sum(votes))
    if facts.volume_level == "heavy":
        agreement = min(agreement + 0.1, 1.0)
    return round(0.4 + 0.3 * strength + 0.3 * agreement, 4)


def trend_confidence(facts: ChartFacts) -> float:
    return round(0.3 + 0.6 * facts.trend_strength, 4)


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def _finish(text: str) -> str:
    text = " ".join(text.split())
    return text[0].upper() + text[1:] + "."


def _tail(phrases: list[str]) -> str:
    return (" " + " ".join(phrases)) if phrases else ""


def _unit(bar_seconds: int) -> str:
    return _UNITS.get(bar_seconds, "bar")


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou8" or word.startswith(("11", "18")) else "a"


def _run_phrase(run: int, bar_seconds: int, rng: np.random.Generator) -> str:
    count = abs(run)
    words = _NUMBERS[count] if count < len(_NUMBERS) else str(count)
    noun = _pick(rng, _DECLINE if run < 0 else _RALLY)
    unit = _unit(bar_seconds)
    if rng.integers(2) == 0:
        return f"after {_article(words)} {words}-{unit} {noun}"
    return f"after {words} {'falling' if run < 0 else 'rising'} {unit}s"


def _trend_sentence(facts: ChartFacts, rng: np.random.Generator) -> str:
    adverb = (
        "strongly"
        if facts.trend_strength >= 0.66
        else "steadily"
        if facts.trend_strength >= 0.33
        else "slightly"
    )
    if facts.trend == "up":
        return _pick(
            rng,
            (
                f"price trends {adverb} higher",
                f"a {_strength(facts)} uptrend",
                "the market is rising",
            ),
        )
    if facts.trend == "down":
        return _pick(
            rng,
            (
                f"price trends {adverb} lower",
                f"a {_strength(facts)} downtrend",
                "the market is falling",
            ),
        )
    return _pick(rng, ("price moves sideways", "a range-bound market", "no clear trend"))


def _strength(facts: ChartFacts) -> str:
    return (
        "strong"
        if facts.trend_strength >= 0.66
        else "moderate"
        if facts.trend_strength >= 0.33
        else "weak"
    )


def _move_modifier(facts: ChartFacts, rng: np.random.Generator) -> _Modifier | None:
    """The prior run when it is at least two closes long, else the trend when there is one."""
    if abs(facts.prior_run) >= 2:
        direction = "down" if facts.prior_run < 0 else "up"
        return _Modifier(
            key="run", value=direction, phrase=_run_phrase(facts.prior_run, facts.bar_seconds, rng)
        )
    if facts.trend != "sideways":
        return _Modifier(key="trend", value=facts.trend, phrase=_pick(rng, _TREND[facts.trend]))
    return None


def _modifiers(facts: ChartFacts, rng: np.random.Generator, limit: int | None) -> list[_Modifier]:
    """The chart's true modifiers; with a limit, a shuffled subset of at most `limit` (move first)."""
    mods: list[_Modifier] = []
    move = _move_modifier(facts, rng)
    if move is not None:
        mods.append(move)
    if facts.volume_level in _VOLUME:
        mods.append(
            _Modifier(
                key="volume",
                value=facts.volume_level,
                phrase=_pick(rng, _VOLUME[facts.volume_level]),
            )
        )
    if facts.rsi_zone in _RSI:
        mods.append(
            _Modifier(key="rsi", value=facts.rsi_zone, phrase=_pick(rng, _RSI[facts.rsi_zone]))
        )
    if facts.macd_cross in _MACD:
        mods.append(
            _Modifier(
                key="macd", value=facts.macd_cross, phrase=_pick(rng, _MACD[facts.macd_cross])
            )
        )
    if facts.bollinger_position in _BANDS:
        pos = facts.bollinger_position
        mods.append(_Modifier(key="bands", value=pos, phrase=_pick(rng, _BANDS[pos])))
    if facts.bollinger_squeeze:
        mods.append(_Modifier(key="squeeze", value="yes", phrase=_pick(rng, _SQUEEZE)))
    if facts.volatility_regime in _VOLATILITY:
        regime = facts.volatility_regime
        mods.append(
            _Modifier(key="volatility", value=regime, phrase=_pick(rng, _VOLATILITY[regime]))
        )
    if limit is None or not mods:
        return mods
    keep = int(rng.integers(min(len(mods), limit) + 1))
    chosen = [mods[int(i)] for i in rng.permutation(len(mods))[:keep]]
    return [m for m in chosen if m.key in ("run", "trend")] + [
        m for m in chosen if m.key not in ("run", "trend")
    ]


def _flip_modifier(m: _Modifier, rng: np.random.Generator) -> _Modifier | None:
    value = _FLIP.get(m.value)
    table = {"volume": _VOLUME, "rsi": _RSI, "macd": _MACD, "bands": _BANDS}.get(m.key)
    if value is None or table is None:
        return None
    return _Modifier(key=m.key, value=value, phrase=_pick(rng, table[value]))


def _flipped_move(facts: ChartFacts) -> ChartFacts:
    """Facts with the prior move and trend reversed; a flat chart gets the move a pattern should not follow."""
    trend = {"up": "down", "down": "up", "sideways": "sideways"}[facts.trend]
    run = -facts.prior_run if abs(facts.prior_run) >= 2 else 0
    if run == 0 and trend == "sideways":
        direction = facts.patterns[0].direction if facts.patterns else 1
        run = 3 * (direction or 1)
    return msgspec.structs.replace(facts, trend=trend, prior_run=run)
