from __future__ import annotations

import json
from pathlib import Path

import pytest

from daemon.cli import main
from tests.vlm_engine.synth import bars_frame
from vlm_engine.render import decode_png


@pytest.fixture
def bars_csv(tmp_path: Path) -> Path:
    path = tmp_path / "bars.csv"
    bars_frame(n=200).to_csv(path, index=False)
    return path


@pytest.mark.parametrize("renderer", ["numpy", "mplfinance"])
def test_chart_render_when_bars_file_then_png_with_metadata(
    tmp_path: Path, bars_csv: Path, renderer: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "c" / "chart.png"
    code = main(
        [
            "chart",
            "render",
            "--bars",
            str(bars_csv),
            "--symbol",
            "SIMB",
            "--at",
            "2023-11-15T00:00:00Z",
            "--out",
            str(out),
            "--renderer",
            renderer,
        ]
    )
    assert code == 0
    pixels, meta = decode_png(out.read_bytes())
    assert pixels.shape == (224, 224, 3)
    assert meta.symbol == "SIMB"
    assert meta.renderer == renderer
    assert 1_700_006_400 - 60 < meta.last_ts <= 1_700_006_400
    assert meta.bars == 64
    assert main(["chart", "info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert info["spec_hash"] == meta.spec_hash
    assert info["last_ts"] == meta.last_ts


def test_chart_render_when_unknown_symbol_then_one_line_error(
    tmp_path: Path, bars_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "chart",
            "render",
            "--bars",
            str(bars_csv),
            "--symbol",
            "NOPE",
            "--out",
            str(tmp_path / "x.png"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert "NOPE" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.png").exists()


def test_chart_render_when_bad_row_then_error_names_file_and_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    frame = bars_frame(n=100)
    frame["close"] = frame["close"].astype(object)
    frame.loc[7, "close"] = "abc"
    path = tmp_path / "bad.csv"
    frame.to_csv(path, index=False)
    code = main(
        [
            "chart",
            "render",
            "--bars",
            str(path),
            "--symbol",
            "SIMA",
            "--out",
            str(tmp_path / "x.png"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert "bad.csv" in err
    assert "row 7" in err


def test_chart_info_when_not_a_chart_then_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "x.png"
    path.write_bytes(b"nope")
    assert main(["chart", "info", str(path)]) == 1
    assert "not a readable PNG" in capsys.readouterr().err
