"""One batch's orders explained from what the scorer saw (strategy.ml_scorer.Evidence).

Runs off the order path (the explainer's worker thread, or after a backtest): the exact chart the
engine scored as a PNG with its chart spec in the metadata, CLIP's nearest prompt texts and
pattern probabilities, the nearest training charts (the bundle's analog index), XGBoost's exact
TreeSHAP contributions, the fusion and the risk decision. An order whose scorer kept no evidence
(the rule scorer) gets the short form: scorer, its signal's reasons, the risk decision.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

from daemon.explain.values import (
    AnalogRef,
    ChartRef,
    Contribution,
    Explanation,
    FusionView,
    RiskView,
    TextMatch,
    analog_url,
    chart_url,
)
from strategy.kernel import BatchDecision
from strategy.ml_scorer import Evidence
from strategy.types import Order, OrderIntent, RiskDecision, Signal

PutChart = Callable[[bytes], str]


class BundleView(msgspec.Struct, frozen=True, kw_only=True, eq=False):
    """What explanations need from one loaded bundle, computed once per bundle: its prompt texts
    (with the pattern class each stands for) and their unit text embeddings, the chart spec, and
    the analog index (None for a bundle without one)."""

    bundle_id: str
    spec: Any  # vlm_engine.render.ChartSpec
    spec_hash: str
    texts: tuple[tuple[str, str], ...]
    text_embeddings: npt.NDArray[np.float64]
    analogs: Any = None  # vlm_engine.clip.analogs.AnalogIndex


def bundle_view(bundle: Any) -> BundleView:
    """A LoadedBundle's view (encodes every prompt text with the bundle's text tower: off the path)."""
    from vlm_engine.clip.search import text_embeddings

    clip = bundle.engine.bundle
    texts = tuple((t, name) for name, group in clip.prompts.patterns.items() for t in group)
    embeddings = text_embeddings(bundle.engine, [t for t, _ in texts]).astype(np.float64)
    return BundleView(
        bundle_id=bundle.bundle_id,
        spec=bundle.spec,
        spec_hash=bundle.spec_hash,
        texts=texts,
        text_embeddings=embeddings,
        analogs=getattr(bundle, "analogs", None),
    )


def order_decisions(decision: BatchDecision) -> list[tuple[Order, RiskDecision]]:
    """Each order with the risk decision that accepted it (the kernel makes one order per
    accepted intent that is not a cancel, in order)."""
    accepted = [d for d in decision.decisions if d.accepted and not d.intent.is_cancel]
    return list(zip(decision.orders, accepted, strict=False))


def accepted(orders: Sequence[Order]) -> BatchDecision:
    """A batch decision in which risk accepted exactly these orders (a backtest's, a bench's)."""
    decisions = [
        RiskDecision(
            intent=OrderIntent(
                symbol=o.symbol,
                ts=o.created_ts,
                side=o.side,
                quantity=o.quantity,
                order_type=o.order_type,
                limit_price=o.limit_price,
                reason=o.reason,
            ),
            accepted=True,
        )
        for o in orders
    ]
    return BatchDecision(decisions=decisions, orders=list(orders), cancels=[])


def chart_row(chunks: Sequence[npt.NDArray[np.uint8]], row: int) -> npt.NDArray[np.uint8] | None:
    """Row `row` of images kept as consecutive chunks (ClipBatch.images), None past the end."""
    for chunk in chunks:
        if row < chunk.shape[0]:
            image: npt.NDArray[np.uint8] = chunk[row]
            return image
        row -= chunk.shape[0]
    return None


def top_texts(view: BundleView, embedding: npt.NDArray[np.float64], k: int) -> list[TextMatch]:
    """The k prompt texts nearest the image embedding (cosine; both unit length)."""
    sims = view.text_embeddings @ (embedding / max(float(np.linalg.norm(embedding)), 1e-12))
    order = np.argsort(-sims, kind="stable")[:k]
    return [
        TextMatch(text=view.texts[i][0], pattern=view.texts[i][1], similarity=float(sims[i]))
        for i in order.tolist()
    ]


def top_contributions(
    names: Sequence[str], contributions: npt.NDArray[np.float64], k: int
) -> list[Contribution]:
    """The k features with the largest |contribution| (zeros left out), bias column excluded."""
    values = contributions[: len(names)]
    order = np.argsort(-np.abs(values), kind="stable")[:k]
    return [
        Contribution(feature=names[i], value=float(values[i]))
        for i in order.tolist()
        if values[i] != 0
    ]


def _finite(value: float) -> float | None:
    return value if np.isfinite(value) else None


def _risk(decision: RiskDecision) -> RiskView:
    return RiskView(accepted=decision.accepted, reason=decision.reason, detail=decision.detail)


def _describe(scorer: Any) -> str:
    describe = getattr(scorer, "describe", None)
    return str(describe()) if callable(describe) else "TA-Lib rule scorer"


def short_explanation(
    order: Order, risk: RiskDecision, signal: Signal | None, scorer: Any
) -> Explanation:
    """An order whose scorer kept no evidence: scorer, its signal's reasons and the risk decision."""
    name = signal.scorer if signal is not None else str(getattr(scorer, "name", "unknown"))
    p_up = signal.p_up if signal is not None else 0.5
    return Explanation(
        client_order_id=order.client_order_id,
        symbol=order.symbol,
        ts=order.created_ts,
        side=str(order.side),
        quantity=order.quantity,
        reason=order.reason,
        scorer=name,
        bundle_id=None,
        spec_hash=None,
        chart=None,
        texts=[],
        patterns={},
        analogs=[],
        contributions=[],
        fusion=FusionView(
            describe=_describe(scorer),
            weights={},
            probabilities={name: p_up} if signal is not None else {},
            p_up=p_up,
            disagreement=signal.disagreement if signal is not None else 0.0,
            entropy=signal.entropy if signal is not None else 0.0,
        ),
        risk=_risk(risk),
        reasons=signal.reasons if signal is not None else (),
    )


class _Vision(msgspec.Struct, frozen=True, kw_only=True):
    """One window's CLIP outputs: pattern probabilities, unit embedding, chart image (or None)."""

    patterns: dict[str, float]
    embedding: npt.NDArray[np.float64]
    image: npt.NDArray[np.uint8] | None


def _vision_row(evidence: Evidence, i: int) -> _Vision | None:
    vision = evidence.vision
    if vision is None:
        return None
    hits = np.flatnonzero(evidence.vision_rows == i)
    if hits.size == 0:
        return None
    j = int(hits[0])
    return _Vision(
        patterns={
            n: float(p) for n, p in zip(vision.pattern_names, vision.pattern_probs[j], strict=True)
        },
        embedding=np.asarray(vision.embeddings[j], dtype=np.float64),
        image=chart_row(vision.charts, j),
    )


def _chart(view: BundleView, seen: _Vision, window: Any, put_chart: PutChart) -> ChartRef | None:
    from vlm_engine.render.png import chart_meta, encode_png

    if seen.image is None:
        return None
    digest = put_chart(encode_png(seen.image, chart_meta(view.spec, window)))
    return ChartRef(hash=digest, url=chart_url(digest))


def _analogs(
    view: BundleView, embedding: npt.NDArray[np.float64], k: int, put_chart: PutChart
) -> list[AnalogRef]:
    index = view.analogs
    if index is None or k <= 0:
        return []
    out = []
    for a in index.nearest(embedding[None, :], k)[0]:
        try:
            digest: str | None = put_chart(index.chart_png(a.row))
        except Exception:  # an analog without its image still says what happened after it
            digest = None
        out.append(
            AnalogRef(
                row=int(a.row),
                symbol=a.symbol,
                ts=a.ts,
                forward_return=_finite(float(a.forward_return)),
                patterns=tuple(a.patterns),
                similarity=float(a.similarity),
                chart_url=analog_url(int(a.row)),
                chart_hash=digest,
            )
        )
    return out


def explain_batch(
    *,
    scorer: Any,
    evidence: Evidence | None,
    signals: Sequence[Signal],
    decision: BatchDecision,
    view: BundleView | None,
    put_chart: PutChart,
    top_k: int,
    analogs_k: int,
) -> list[Explanation]:
    """One explanation per order of the batch, matched to its window and signal by symbol and bar
    close (short form without evidence, or for an order no window of the evidence decided)."""
    by_key: Mapping[tuple[str, int], Signal] = {
        (s.symbol, int(s.ts.timestamp())): s for s in signals
    }
    pairs = order_decisions(decision)
    rows: dict[tuple[str, int], int] = {}
    if evidence is not None:
        rows = {(w.symbol, int(w.timestamps[-1])): i for i, w in enumerate(evidence.windows)}
    explained = [(o, r, rows.get(_key(o))) for o, r in pairs]
    wanted = sorted({i for _, _, i in explained if i is not None})
    contributions = _contributions(scorer, evidence, wanted)
    out: list[Explanation] = []
    for order, risk, i in explained:
        signal = by_key.get(_key(order))
        if evidence is None or i is None:
            out.append(short_explanation(order, risk, signal, scorer))
            continue
        out.append(
            _full(
                order=order,
                risk=risk,
                signal=signal,
                scorer=scorer,
                evidence=evidence,
                i=i,
                view=view,
                put_chart=put_chart,
                contributions=contributions.get(i, []),
                top_k=top_k,
                analogs_k=analogs_k,
            )
        )
    return out


def _key(order: Order) -> tuple[str, int]:
    """An order's window and signal: its symbol at the bar close it was decided on."""
    return order.symbol, int(order.created_ts.timestamp())


def _contributions(
    scorer: Any, evidence: Evidence | None, rows: list[int]
) -> dict[int, npt.NDArray[np.float64]]:
    """Exact TreeSHAP (pred_contribs) of the explained rows, in one call."""
    xgb = getattr(scorer, "xgb", None)
    if evidence is None or xgb is None or getattr(scorer, "mode", "") == "clip" or not rows:
        return {}
    x = evidence.features[rows]
    if x.shape[1] != len(xgb.feature_names):
        return {}
    values = xgb.contributions(x)
    return {i: values[n] for n, i in enumerate(rows)}


def _full(
    *,
    order: Order,
    risk: RiskDecision,
    signal: Signal | None,
    scorer: Any,
    evidence: Evidence,
    i: int,
    view: BundleView | None,
    put_chart: PutChart,
    contributions: Any,
    top_k: int,
    analogs_k: int,
) -> Explanation:
    seen = _vision_row(evidence, i) if view is not None else None
    fused = evidence.fused[i]
    probabilities = {m: _finite(float(p[i])) for m, p in evidence.probabilities.items()}
    xgb = getattr(scorer, "xgb", None)
    names = xgb.feature_names if xgb is not None else ()
    short = short_explanation(order, risk, signal, scorer)
    return msgspec.structs.replace(
        short,
        bundle_id=view.bundle_id if view is not None else None,
        spec_hash=view.spec_hash if view is not None else None,
        chart=_chart(view, seen, evidence.windows[i], put_chart)
        if view is not None and seen is not None
        else None,
        texts=top_texts(view, seen.embedding, top_k) if view is not None and seen else [],
        patterns=seen.patterns if seen is not None else {},
        analogs=_analogs(view, seen.embedding, analogs_k, put_chart)
        if view is not None and seen is not None
        else [],
        contributions=top_contributions(names, contributions, top_k) if len(contributions) else [],
        fusion=FusionView(
            describe=short.fusion.describe,
            weights=dict(evidence.weights),
            probabilities={m: p for m, p in probabilities.items() if p is not None},
            p_up=fused.p_up if fused is not None else short.fusion.p_up,
            disagreement=fused.disagreement if fused is not None else short.fusion.disagreement,
            entropy=fused.entropy if fused is not None else short.fusion.entropy,
        ),
    )
