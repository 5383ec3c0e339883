"""`make bench` runs a bench that needs a built artifact only when it is there, and says why not."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from run_all import FULL, NEEDS, SCRIPTS, not_runnable


def test_not_runnable_when_the_bundle_is_missing_then_it_names_it_and_how_to_build_it(tmp_path):
    needs = {"clip_default": (tmp_path / "bundles" / "default", "run `vlmtrader model bootstrap`")}
    why = not_runnable("clip_default", needs)
    assert why is not None
    assert str(tmp_path / "bundles" / "default") in why
    assert "model bootstrap" in why


def test_not_runnable_when_the_bundle_exists_then_it_runs(tmp_path):
    needs = {"clip_default": (tmp_path, "build it")}
    assert not_runnable("clip_default", needs) is None
    assert not_runnable("journal", needs) is None  # needs nothing


def test_every_bench_run_all_names_has_a_script():
    bench_dir = Path(__file__).resolve().parents[2] / "bench"
    for name in FULL:
        assert (bench_dir / f"bench_{SCRIPTS.get(name, name)}.py").is_file(), name
    assert set(NEEDS) <= set(FULL)
