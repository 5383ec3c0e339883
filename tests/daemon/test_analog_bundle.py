"""The analog index in a built bundle: `model bootstrap` writes it (hashed in the card), the loader
loads it with the bundle, and a bundle without one still loads."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from daemon.model.loader import BundleUnusable, load_bundle
from tests.daemon.ml_helpers import bundle_copy, quick_bundle
from vlm_engine.bundle import read_card
from vlm_engine.bundle.bundle import _write_card
from vlm_engine.clip.analogs import ANALOG_DIR, CHARTS_FILE, EMBEDDINGS_FILE, INDEX_FILE


def test_bootstrap_when_built_then_card_hashes_the_index_and_says_its_cap() -> None:
    card = read_card(quick_bundle())
    assert {INDEX_FILE, EMBEDDINGS_FILE, CHARTS_FILE} <= set(card.files)
    stage = card.stages["analogs"]
    assert stage["split"] == "train"
    assert stage["max_rows"] == 5_000
    assert stage["rows"] == card.dataset.counts["train"]  # below the cap: every training chart
    assert stage["bytes_per_chart"] > 0


def test_nearest_when_training_chart_scored_by_the_engine_then_itself_first() -> None:
    models = load_bundle(quick_bundle())
    analogs = models.analogs
    assert analogs is not None
    assert analogs.horizon_bars == models.card.trained_on.horizon_bars  # type: ignore[union-attr]
    rows = list(range(0, len(analogs), 7))
    charts = np.stack(
        [np.asarray(Image.open(io.BytesIO(analogs.chart_png(r))).convert("RGB")) for r in rows]
    )
    embeddings = models.engine.score_images(charts).embeddings  # the daemon's own image path
    hits = analogs.nearest(embeddings, k=5)
    assert [h[0].row for h in hits] == rows
    assert all(h[0].similarity > 0.99 for h in hits)


def test_load_when_bundle_has_no_analogs_then_analogs_none(tmp_path: Path) -> None:
    old = bundle_copy(tmp_path, "old")
    shutil.rmtree(old / ANALOG_DIR)
    _write_card(old, read_card(old))  # rehashed as a bundle built before the index existed
    assert INDEX_FILE not in read_card(old).files
    models = load_bundle(old)
    assert models.analogs is None
    assert models.engine is not None


def test_load_when_analog_file_damaged_then_bundle_refused_in_one_line(tmp_path: Path) -> None:
    broken = bundle_copy(tmp_path, "broken")
    (broken / CHARTS_FILE).write_bytes(b"not the charts")
    with pytest.raises(BundleUnusable, match=r"analogs/charts\.bin does not match its sha256") as e:
        load_bundle(broken)
    assert "\n" not in str(e.value)


def test_model_info_when_bundle_has_analogs_then_says_rows_and_cap(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from daemon.cli import main

    assert main(["model", "info", str(quick_bundle())]) == 0
    rows = read_card(quick_bundle()).stages["analogs"]["rows"]
    assert f"analogs:     {rows} training charts (cap 5000)" in capsys.readouterr().out
