"""`vlmtrader search`: a bars file's charts ranked by CLIP text-image similarity, with a CLIP model
trained on one planted pattern, and one-line errors for bad input."""

from __future__ import annotations

import base64
import io
import re
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from daemon.cli import main
from daemon.model.search import SearchInputError, search_bars_file
from daemon.training import quick_config
from daemon.training.clip import train_bundle
from strategy.market_sim import SimMarketConfig, simulate_frame
from vlm_engine.bundle import DatasetRef
from vlm_engine.clip.quickset import QuicksetConfig, samples_from_bars

PATTERN = "three_white_soldiers"
MARKET = SimMarketConfig(symbols=("SIMA", "SIMB"), patterns=(PATTERN,), pattern_rate=0.1, seed=11)


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, pd.DataFrame]:
    """A CLIP-only bundle fine-tuned (tiny model, 10 epochs) on charts of one planted pattern, and
    a later bars file of the same market with the pattern planted at 4% of the bars (no labels)."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("search")
    quick = quick_config()
    frame = simulate_frame(MARKET, datetime(2024, 1, 1, tzinfo=UTC), 2_500)
    train_bundle(
        splits=samples_from_bars(frame, quick.spec, QuicksetConfig(seed=0)),
        spec=quick.spec,
        dataset=DatasetRef(source="tests", manifest_hash="0" * 16),
        cfg=msgspec.structs.replace(
            quick.train, epochs=10, min_epochs=10, patience=10, learning_rate=1e-3
        ),
        out=root / "bundle",
        device="cpu",
        folds=2,
    )
    later = msgspec.structs.replace(MARKET, seed=99, pattern_rate=0.04)
    held = simulate_frame(later, datetime(2025, 1, 1, tzinfo=UTC), 400)
    bars = root / "bars.csv"
    held.drop(columns=["pattern", "direction"]).to_csv(bars, index=False)
    return root / "bundle", bars, held


def _planted(held: pd.DataFrame) -> set[tuple[str, datetime]]:
    rows = held[held["pattern"] == PATTERN]
    return {
        (str(s), pd.Timestamp(t).to_pydatetime())
        for s, t in zip(rows["symbol"], rows["ts"], strict=True)
    }


def test_search_when_pattern_planted_then_its_windows_rank_on_top(
    planted: tuple[Path, Path, pd.DataFrame],
) -> None:
    bundle, bars, held = planted
    result = search_bars_file(bars, bundle, "three white soldiers", top=5)
    truth = _planted(held)
    base_rate = len(truth) / result.windows
    on_top = [(h.symbol, h.ts) in truth for h in result.hits]
    assert base_rate < 0.05
    assert on_top[0]  # the best match is a planted window
    assert sum(on_top) >= 3  # 3 of 5 where chance gives 0.25
    assert [h.rank for h in result.hits] == [1, 2, 3, 4, 5]
    assert all(
        a.similarity >= b.similarity for a, b in zip(result.hits, result.hits[1:], strict=False)
    )
    assert result.horizon_bars == 5


def test_cli_when_html_asked_then_table_and_page_with_inline_charts(
    planted: tuple[Path, Path, pd.DataFrame],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bundle, bars, held = planted
    page = tmp_path / "out" / "search.html"
    code = main(["search", "white soldiers", "--bars", str(bars), "--bundle", str(bundle),
                 "--top", "1000"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    rows = [line.split() for line in out.splitlines() if re.match(r"^\s+\d+\s", line)]
    assert {r[2] for r in rows} <= {"SIMA", "SIMB"}
    assert len(rows) == 2 * (400 - 31)  # every window of both symbols: top is above the count
    # exactly the windows whose horizon runs past the file's end have no forward return
    tail = {t.isoformat() for t in sorted(held["ts"].unique())[-5:]}
    assert {r[1] for r in rows if r[4] == "-"} == tail
    assert sum(r[4] == "-" for r in rows) == 2 * 5
    assert main(["search", "white soldiers", "--bars", str(bars), "--bundle", str(bundle),
                 "--top", "3", "--html", str(page)]) == 0  # fmt: skip
    html = page.read_text()
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(images) == 3
    assert "white soldiers" in html
    chart = Image.open(io.BytesIO(base64.b64decode(images[0])))
    assert chart.size == (quick_config().spec.width, quick_config().spec.height)
    assert np.asarray(chart).std() > 0  # a drawn chart, not a blank


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["hammer", "--bars", "{tmp}/missing.csv"], "missing.csv: no such bar file"),
        (["hammer", "--bars", "{tmp}/bad.csv"], "missing column(s)"),
        (["hammer", "--bars", "{bars}", "--bundle", "{tmp}/nope"], "no such bundle directory"),
        (["   ", "--bars", "{bars}"], "query: empty"),
        (["x" * 301, "--bars", "{bars}"], "the limit is 300"),
    ],
)
def test_cli_when_input_bad_then_one_line_error(
    planted: tuple[Path, Path, pd.DataFrame],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    words: str,
) -> None:
    bundle, bars, _ = planted
    (tmp_path / "bad.csv").write_text("when,price\n1,2\n")
    filled = [a.format(tmp=tmp_path, bars=bars) for a in args]
    if "--bundle" not in filled:
        filled += ["--bundle", str(bundle)]
    assert main(["search", *filled]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ")
    assert words in err
    assert "\n" not in err


def test_search_when_bars_shorter_than_a_chart_then_named_error(
    planted: tuple[Path, Path, pd.DataFrame], tmp_path: Path
) -> None:
    bundle, _, held = planted
    short = tmp_path / "short.csv"
    held.groupby("symbol").head(10).drop(columns=["pattern", "direction"]).to_csv(
        short, index=False
    )
    with pytest.raises(SearchInputError, match="no symbol has the 32 bars one chart needs"):
        search_bars_file(short, bundle, "hammer")
