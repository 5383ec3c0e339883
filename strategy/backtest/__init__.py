"""The backtester: the live strategy stages over historical bars, metrics, comparison and report."""

from __future__ import annotations

import strategy

strategy.NATIVE.extend(__path__, "backtest")  # the compiled engine, when strategy's core is
