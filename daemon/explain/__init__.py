"""Why did it buy? One explanation per order, written after the order is at the broker.

config (ExplainConfig, the `explain:` section) · values (the JSON the API serves) · evidence (one
order's explanation from a scorer's retained Evidence) · charts (content-hashed PNGs, retention) ·
store (its own SQLite file) · worker (the bounded background thread the daemon feeds) · page
(terminal text and the HTML page of `vlmtrader explain`, and the backtest report's trade pages).
"""
