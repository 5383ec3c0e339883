"""GET /search on a real `vlmtrader run` (paper-sim, the quick bundle serving) over real HTTP:
the windows its bar store holds ranked by CLIP, read-only without the token, q and top checked."""

from __future__ import annotations

import base64
import io
import shutil
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.daemon.ml_helpers import quick_bundle
from tests.integration.e2e_helpers import e2e_config, log_events, running_daemon, status_json, until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]
SYMBOLS = {f"SIM{i}" for i in range(4)}


def test_search_when_bundle_serves_then_held_windows_ranked_and_bad_queries_refused(
    tmp_path: Path,
) -> None:
    shutil.copytree(quick_bundle(), tmp_path / "state" / "bundles" / "live")
    config = e2e_config(
        tmp_path,
        speed=600.0,
        api=True,
        extra={"scorer": {"kind": "ml", "bundle": "bundles/live"}, "bars": {"window": 48}},
    )
    with running_daemon(config, tmp_path) as daemon:
        (started,) = log_events(daemon, "api.started")
        with httpx.Client(base_url=f"http://127.0.0.1:{started['port']}", timeout=60) as http:
            answers: list[httpx.Response] = []

            def searched() -> bool:  # 409 until the store holds one chart's bars of a symbol
                answers.append(http.get("/search", params={"q": "hammer after a decline"}))
                return answers[-1].status_code == 200

            until(searched, daemon=daemon, timeout=90, what="a 200 from /search")
            early = [a for a in answers if a.status_code != 200]
            assert all(a.status_code == 409 for a in early)
            assert all("bars" in a.json()["detail"] for a in early)
            body = answers[-1].json()
            top = http.get("/search", params={"q": "bullish engulfing", "top": 3, "charts": "true"})
            bad = {
                "empty": http.get("/search", params={"q": ""}).status_code,
                "blank": http.get("/search", params={"q": "   "}).status_code,
                "long": http.get("/search", params={"q": "x" * 301}).status_code,
                "top0": http.get("/search", params={"q": "hammer", "top": 0}).status_code,
                "missing": http.get("/search").status_code,
            }
            bundle_id = status_json(http)["bundle_id"]
    assert body["bundle_id"] == bundle_id
    assert body["query"] == "hammer after a decline"
    assert body["horizon_bars"] == 5
    assert 0 < len(body["hits"]) <= 20
    assert body["windows"] >= len(body["hits"])
    assert {h["symbol"] for h in body["hits"]} <= SYMBOLS
    sims = [h["similarity"] for h in body["hits"]]
    assert sims == sorted(sims, reverse=True)
    assert [h["rank"] for h in body["hits"]] == list(range(1, len(sims) + 1))
    assert all(h["chart_png"] is None for h in body["hits"])
    assert top.status_code == 200, top.text
    charts = [h["chart_png"] for h in top.json()["hits"]]
    assert len(charts) == 3
    image = Image.open(io.BytesIO(base64.b64decode(charts[0])))
    assert image.format == "PNG"
    assert bad == {"empty": 422, "blank": 422, "long": 422, "top0": 422, "missing": 422}
    ranked = log_events(daemon, "search.ranked")
    assert len(ranked) == 2
    assert ranked[0]["query"] == "hammer after a decline"
