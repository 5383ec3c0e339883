"""An order's explanation as the frozen value GET /orders/{id}/explain serves (the dashboard's contract).

Field names are the contract: keep them. Extra fields may be added (reasons, chart_hash)."""

from __future__ import annotations

from datetime import datetime

import msgspec

EXPLAIN_DB = "explanations.sqlite"
CHARTS_DIR = "charts"


def chart_url(digest: str) -> str:
    return f"/charts/{digest}.png"


def analog_url(row: int) -> str:
    return f"/analogs/{row}.png"


class ChartRef(msgspec.Struct, frozen=True, kw_only=True):
    hash: str
    url: str


class TextMatch(msgspec.Struct, frozen=True, kw_only=True):
    """One of the bundle's prompt texts, the pattern class it stands for, and its cosine similarity."""

    text: str
    pattern: str
    similarity: float


class AnalogRef(msgspec.Struct, frozen=True, kw_only=True):
    """A training chart near the scored one; forward_return None at the end of its data."""

    row: int
    symbol: str
    ts: datetime
    forward_return: float | None
    patterns: tuple[str, ...]
    similarity: float
    chart_url: str
    chart_hash: str | None = None  # its PNG in the charts dir, so the page needs no bundle


class Contribution(msgspec.Struct, frozen=True, kw_only=True):
    """An XGBoost feature's contribution to the margin (log-odds; + toward up)."""

    feature: str
    value: float


class FusionView(msgspec.Struct, frozen=True, kw_only=True):
    describe: str
    weights: dict[str, float]
    probabilities: dict[str, float]
    p_up: float
    disagreement: float
    entropy: float


class RiskView(msgspec.Struct, frozen=True, kw_only=True):
    accepted: bool
    reason: str
    detail: str


class Explanation(msgspec.Struct, frozen=True, kw_only=True):
    """Why one order was placed: the chart scored, CLIP's texts and patterns, the nearest training
    charts, XGBoost's contributions, the fusion, and the risk decision. A rule-scorer order has no
    chart, texts, patterns, analogs or contributions: its signal's reasons say why."""

    client_order_id: str
    symbol: str
    ts: datetime
    side: str
    quantity: float
    reason: str
    scorer: str
    bundle_id: str | None
    spec_hash: str | None
    chart: ChartRef | None
    texts: list[TextMatch]
    patterns: dict[str, float]
    analogs: list[AnalogRef]
    contributions: list[Contribution]
    fusion: FusionView
    risk: RiskView
    reasons: tuple[str, ...] = ()
