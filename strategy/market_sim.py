"""A simulated market: regime-switching random walks with planted candlestick patterns.

Each symbol follows a log random walk whose drift and volatility switch between regimes
(default calm / trending / volatile; a Markov chain with geometric stays, the sign of a
regime's drift drawn at each entry), with a weak pull back to `start_price`. The market
trades around the clock in back-to-back sessions of `session_bars` bars counted from
`start`; inside a session volatility and volume follow a U shape (high at the open and the
close, low at midday). Bar i closes at `start + i * bar_seconds`.

Patterns are planted with probability `pattern_rate` per bar and symbol (never overlapping,
never across a session boundary). Each is sized from the average body and range of the ten
bars before it, so that TA-Lib's default candle settings detect it on the signal bar (the
last bar of the pattern, whose close time is the recorded `ts`); strategy/sim_patterns.py
names the patterns, their TA-Lib functions and their shapes.

After the signal bar, the next `drift_horizon` bars drift by `pattern_drift_bps` in total in
the pattern's direction: the known edge a model should recover. Randomness is counter-based:
one generator per (seed, symbol, session), so any session is computed from the state at its
start, and streaming, seeking and the batch frame give identical bars.

Over 400 lines: the regime walk, the session shape and the planting draw from one generator per
(seed, symbol, session), and streaming and the batch frame run the same _Model.
"""

from __future__ import annotations

import math
import zlib
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Final

import msgspec
import numpy as np
import numpy.typing as npt

from strategy.sim_patterns import (
    ALL_PATTERNS,
    BUILDERS,
    PATTERN_DIRECTION,
    SHAPE_DRAWS,
    SPAN,
    PatternName,
)
from strategy.types import Bar

if TYPE_CHECKING:  # pandas (0.3-0.5 s to import) loads with the batch frame, not with the sim feed
    import pandas as pd

PositiveInt = Annotated[int, msgspec.Meta(gt=0)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
NonNegativeFloat = Annotated[float, msgspec.Meta(ge=0)]
FloatArray = npt.NDArray[np.float64]

BAR_COLUMNS: Final[tuple[str, ...]] = ("symbol", "ts", "open", "high", "low", "close", "volume")

_LOOKBACK = 10  # bars TA-Lib averages body and range over (its default candle settings)
_WICK = 0.5  # mean wick length in units of the bar's volatility
_VOLUME_NOISE = 0.35


class RegimeConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One market regime: drift and volatility per bar in basis points, mean stay in bars."""

    name: str
    drift_bps: float = 0.0
    vol_bps: PositiveFloat = 8.0
    mean_bars: Annotated[float, msgspec.Meta(ge=1)] = 240.0


DEFAULT_REGIMES: Final[tuple[RegimeConfig, ...]] = (
    RegimeConfig(name="calm", drift_bps=0.0, vol_bps=6.0, mean_bars=300.0),
    RegimeConfig(name="trending", drift_bps=1.5, vol_bps=9.0, mean_bars=150.0),
    RegimeConfig(name="volatile", drift_bps=0.0, vol_bps=20.0, mean_bars=80.0),
)


class SimMarketConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The simulated market; the same config and start always give the same bars.

    intraday_vol_boost / intraday_volume_boost: how much higher volatility / volume is at the
    session's open and close than at midday (1.0 = twice). mean_reversion: per-bar pull of
    log price toward start_price. pattern_rate: chance per bar and symbol of planting a pattern.
    """

    symbols: Annotated[tuple[str, ...], msgspec.Meta(min_length=1)] = (
        "SIMA",
        "SIMB",
        "SIMC",
        "SIMD",
    )
    bar_seconds: PositiveInt = 60
    seed: Annotated[int, msgspec.Meta(ge=0)] = 7
    start_price: PositiveFloat = 100.0
    base_volume: PositiveFloat = 10_000.0
    regimes: Annotated[tuple[RegimeConfig, ...], msgspec.Meta(min_length=1)] = DEFAULT_REGIMES
    session_bars: Annotated[int, msgspec.Meta(ge=32)] = 390
    intraday_vol_boost: NonNegativeFloat = 1.0
    intraday_volume_boost: NonNegativeFloat = 2.0
    mean_reversion: Annotated[float, msgspec.Meta(ge=0, le=0.1)] = 2e-5
    pattern_rate: Annotated[float, msgspec.Meta(ge=0, le=0.2)] = 0.02
    pattern_drift_bps: float = 15.0
    drift_horizon: PositiveInt = 5
    patterns: tuple[PatternName, ...] = ALL_PATTERNS

    def __post_init__(self) -> None:
        if len(set(self.symbols)) != len(self.symbols):
            msg = "symbols must be unique"
            raise ValueError(msg)
        if any(not s.strip() for s in self.symbols):
            msg = "symbols must not be empty"
            raise ValueError(msg)


class PlantedPattern(msgspec.Struct, frozen=True, kw_only=True):
    """A pattern the simulator planted; ts is the close of its signal (last) bar."""

    symbol: str
    ts: datetime
    pattern: PatternName
    direction: int
    index: int


class _State(msgspec.Struct, frozen=True):
    """One symbol's state at a session start: regime, sign of its drift, last log close."""

    regime: int
    sign: float
    log_close: float


class _Session(msgspec.Struct, frozen=True):
    """One symbol's bars of one session: rows open, high, low, close, volume."""

    values: FloatArray
    end: _State
    planted: list[tuple[int, PatternName]]


# ---- one session of one symbol ----------------------------------------------------------------
class _Model:
    """Arrays derived once from a config and shared by every session."""

    def __init__(self, config: SimMarketConfig) -> None:
        self.config = config
        n = config.session_bars
        x = np.linspace(-1.0, 1.0, n) ** 2
        vol_shape = 1.0 + config.intraday_vol_boost * x
        volume_shape = 1.0 + config.intraday_volume_boost * x
        self.vol_shape: FloatArray = vol_shape / vol_shape.mean()
        self.volume_shape: FloatArray = volume_shape / volume_shape.mean() * config.base_volume
        self.drift = np.array([r.drift_bps * 1e-4 for r in config.regimes])
        self.vol = np.array([r.vol_bps * 1e-4 for r in config.regimes])
        self.leave = np.array([1.0 / r.mean_bars for r in config.regimes])
        self.log_anchor = math.log(config.start_price)
        self.symbol_keys = [zlib.crc32(s.encode()) for s in config.symbols]
        self.patterns = tuple(dict.fromkeys(config.patterns))

    def initial_state(self) -> _State:
        return _State(0, 1.0, self.log_anchor)

    def session(self, symbol_index: int, k: int, state: _State) -> _Session:
        """Bars of session k for one symbol, from the state at the session's start."""
        cfg = self.config
        n = cfg.session_bars
        rng = np.random.Generator(
            np.random.PCG64(np.random.SeedSequence([cfg.seed, self.symbol_keys[symbol_index], k]))
        )
        z = rng.standard_normal(n)
        wicks = rng.standard_exponential((2, n))
        volume_noise = rng.standard_normal(n)
        plant_at = np.flatnonzero(rng.random(n) < cfg.pattern_rate)
        if not self.patterns:
            plant_at = plant_at[:0]
        choice = rng.integers(0, max(len(self.patterns), 1), size=n)

        regime_of_bar, drift_of_bar, end_regime, end_sign = self._regimes(rng, state, n)
        sigma = self.vol[regime_of_bar] * self.vol_shape
        pull = -cfg.mean_reversion * (state.log_close - self.log_anchor)
        body = drift_of_bar + pull + sigma * z
        upper = _WICK * sigma * wicks[0]
        lower = _WICK * sigma * wicks[1]
        gap = np.zeros(n)
        volume = self.volume_shape * np.exp(_VOLUME_NOISE * volume_noise) * (0.6 + 0.4 * np.abs(z))

        planted = self._plant(rng, plant_at, choice, gap, body, upper, lower, volume)

        log_close = state.log_close + np.cumsum(gap + body)
        log_open = log_close - body
        values = np.empty((5, n))
        values[0] = np.exp(log_open)
        values[1] = np.exp(np.maximum(log_open, log_close) + upper)
        values[2] = np.exp(np.minimum(log_open, log_close) - lower)
        values[3] = np.exp(log_close)
        values[4] = np.maximum(np.round(volume), 1.0)
        # exp of a larger exponent can round equal to exp of a smaller one; keep the envelope exact
        np.maximum(values[1], np.maximum(values[0], values[3]), out=values[1])
        np.minimum(values[2], np.minimum(values[0], values[3]), out=values[2])
        return _Session(values, _State(end_regime, end_sign, float(log_close[-1])), planted)

    def _regimes(
        self, rng: np.random.Generator, state: _State, n: int
    ) -> tuple[npt.NDArray[np.intp], FloatArray, int, float]:
        """Regime per bar (geometric stays, so memoryless across sessions) and drift per bar."""
        regimes = np.empty(n, dtype=np.intp)
        drifts = np.empty(n)
        regime, sign, pos = state.regime, state.sign, 0
        count = len(self.config.regimes)
        while True:
            stay = int(rng.geometric(self.leave[regime]))
            end = min(pos + stay, n)
            regimes[pos:end] = regime
            drifts[pos:end] = sign * self.drift[regime]
            if end == n:
                return regimes, drifts, regime, sign
            pos = end
            if count > 1:
                regime = (regime + 1 + int(rng.integers(0, count - 1))) % count
            sign = 1.0 if rng.random() < 0.5 else -1.0

    def _plant(
        self,
        rng: np.random.Generator,
        plant_at: npt.NDArray[np.intp],
        choice: npt.NDArray[np.int64],
        gap: FloatArray,
        body: FloatArray,
        upper: FloatArray,
        lower: FloatArray,
        volume: FloatArray,
    ) -> list[tuple[int, PatternName]]:
        """Overwrite bars with pattern shapes and add the post-pattern drift; returns (bar, pattern)."""
        cfg = self.config
        n = len(body)
        horizon = cfg.drift_horizon
        drift = cfg.pattern_drift_bps * 1e-4 / horizon
        planted: list[tuple[int, PatternName]] = []
        free_from = _LOOKBACK  # first bar a new pattern (including its lead-in) may start at
        for p in plant_at:
            signal = int(p)
            name = self.patterns[int(choice[signal])]
            first = signal - SPAN[name] + 1
            if first < free_from or signal + horizon >= n:
                continue
            window = slice(first - _LOOKBACK, first)
            b = float(np.abs(body[window]).mean())
            h = b + float(upper[window].mean() + lower[window].mean())
            gaps, bodies, ups, lows, vol = BUILDERS[name](b, h, rng.random(SHAPE_DRAWS))
            span = slice(first, signal + 1)
            gap[span], body[span], upper[span], lower[span] = gaps, bodies, ups, lows
            volume[span] *= vol
            direction = PATTERN_DIRECTION[name]
            body[signal + 1 : signal + 1 + horizon] += direction * drift
            planted.append((signal, name))
            free_from = signal + max(horizon, _LOOKBACK) + 1
        return planted


# ---- streaming --------------------------------------------------------------------------------
def _check_start(start: datetime, bar_seconds: int) -> datetime:
    if start.tzinfo is None or start.utcoffset() is None:
        msg = f"start {start.isoformat()} must be timezone-aware (UTC)"
        raise ValueError(msg)
    start = start.astimezone(UTC)
    if start.microsecond or int(start.timestamp()) % bar_seconds:
        msg = f"start {start.isoformat()} is not aligned to bar_seconds={bar_seconds}"
        raise ValueError(msg)
    return start


class MarketSimulator:
    """Streams the simulated market one timestamp at a time; can seek to any bar cheaply."""

    def __init__(self, *, config: SimMarketConfig, start: datetime) -> None:
        self.config = config
        self.start = _check_start(start, config.bar_seconds)
        self.symbols = tuple(config.symbols)
        self._model = _Model(config)
        self._step = timedelta(seconds=config.bar_seconds)
        self._states: list[list[_State]] = [[self._model.initial_state()] * len(self.symbols)]
        self._planted: list[list[PlantedPattern]] = []
        self._cache: dict[int, list[list[list[float]]]] = {}
        self._next = 0

    @property
    def position(self) -> int:
        """Index of the bar the next call to next_batch() returns (0 = the bar closing at start)."""
        return self._next

    def ts_at(self, index: int) -> datetime:
        return self.start + index * self._step

    def index_at(self, ts: datetime) -> int:
        """Bar index whose close is ts; ts must be aligned and not before start."""
        offset = ts - self.start
        index, rest = divmod(offset, self._step)
        if rest or index < 0:
            msg = f"{ts.isoformat()} is not a bar close of this market (start {self.start.isoformat()})"
            raise ValueError(msg)
        return int(index)

    def next_batch(self) -> list[Bar]:
        """Bars of every symbol closing at the next timestamp."""
        batch = self.batch_at(self._next)
        self._next += 1
        return batch

    def skip_to(self, ts: datetime) -> None:
        """Seek so that next_batch() returns the bars closing at ts, as streaming would."""
        self._next = self.index_at(ts)

    def batch_at(self, index: int) -> list[Bar]:
        """Bars of every symbol closing at bar index; does not move the stream."""
        k, p = divmod(index, self.config.session_bars)
        rows = self._session_rows(k)
        ts = self.ts_at(index)
        return [
            Bar(
                symbol=symbol,
                ts=ts,
                open=r[0][p],
                high=r[1][p],
                low=r[2][p],
                close=r[3][p],
                volume=r[4][p],
            )
            for symbol, r in zip(self.symbols, rows, strict=True)
        ]

    @property
    def planted(self) -> list[PlantedPattern]:
        """Patterns planted in the bars streamed so far (signal bar before position)."""
        if self._next == 0:
            return []
        self._ensure_states((self._next - 1) // self.config.session_bars + 1)
        return [p for session in self._planted for p in session if p.index < self._next]

    def _ensure_states(self, k: int) -> None:
        """Generate sessions in order until the state at the start of session k is known."""
        while len(self._states) <= k:
            self._generate(len(self._states) - 1)

    def _generate(self, k: int) -> list[_Session]:
        sessions = [self._model.session(j, k, state) for j, state in enumerate(self._states[k])]
        if len(self._states) == k + 1:
            self._states.append([s.end for s in sessions])
            self._planted.append(self._records(k, sessions))
        return sessions

    def _session_rows(self, k: int) -> list[list[list[float]]]:
        rows = self._cache.get(k)
        if rows is None:
            self._ensure_states(k)
            rows = [s.values.tolist() for s in self._generate(k)]
            if len(self._cache) >= 2:
                self._cache.pop(next(iter(self._cache)))
            self._cache[k] = rows
        return rows

    def _records(self, k: int, sessions: list[_Session]) -> list[PlantedPattern]:
        base = k * self.config.session_bars
        records = [
            PlantedPattern(
                symbol=symbol,
                ts=self.ts_at(base + p),
                pattern=name,
                direction=PATTERN_DIRECTION[name],
                index=base + p,
            )
            for symbol, s in zip(self.symbols, sessions, strict=True)
            for p, name in s.planted
        ]
        records.sort(key=lambda r: r.index)
        return records


# ---- batch ------------------------------------------------------------------------------------
def simulate_arrays(
    config: SimMarketConfig, n_bars: int
) -> tuple[FloatArray, list[tuple[int, int, PatternName]]]:
    """OHLCV of the first n_bars bars as an array (5, symbols, n_bars) and (symbol, bar, pattern) plants."""
    model = _Model(config)
    n = config.session_bars
    out = np.empty((5, len(config.symbols), n_bars))
    planted: list[tuple[int, int, PatternName]] = []
    for j in range(len(config.symbols)):
        state = model.initial_state()
        for k in range(-(-n_bars // n)):
            session = model.session(j, k, state)
            state = session.end
            stop = min(n, n_bars - k * n)
            out[:, j, k * n : k * n + stop] = session.values[:, :stop]
            planted.extend((j, k * n + p, name) for p, name in session.planted if p < stop)
    return out, planted


def simulate_frame(config: SimMarketConfig, start: datetime, n_bars: int) -> pd.DataFrame:
    """The first n_bars timestamps as a long frame, in streaming order (by ts, then symbol).

    Columns: symbol, ts, open, high, low, close, volume, pattern ("" or the pattern whose
    signal bar this is) and direction (+1 / -1, 0 without a pattern).
    """
    import pandas as pd

    start = _check_start(start, config.bar_seconds)
    values, planted = simulate_arrays(config, n_bars)
    s = len(config.symbols)
    pattern = np.full((n_bars, s), "", dtype=object)
    direction = np.zeros((n_bars, s), dtype=np.int8)
    for j, index, name in planted:
        pattern[index, j] = name
        direction[index, j] = PATTERN_DIRECTION[name]
    ts = pd.date_range(start, periods=n_bars, freq=pd.Timedelta(seconds=config.bar_seconds))
    frame = {
        "symbol": np.tile(np.array(config.symbols, dtype=object), n_bars),
        "ts": np.repeat(ts, s),
        **{name: values[i].T.ravel() for i, name in enumerate(BAR_COLUMNS[2:])},
        "pattern": pattern.ravel(),
        "direction": direction.ravel(),
    }
    return pd.DataFrame(frame)
