from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vlm_engine.metrics import auc, brier, ece, fit_logistic, logit
from vlm_engine.xgb import (
    XgbDataError,
    XgbModel,
    XgbModelError,
    XgbTrainConfig,
    fit_pca,
    train_xgb,
    walk_forward_folds,
)
from vlm_engine.xgb.model import top_by_magnitude
from vlm_engine.xgb.train import TrainResult

FAST = XgbTrainConfig(n_folds=3, learning_rate=0.2, num_boost_round=60, early_stopping_rounds=10)


def _data(n: int = 3000, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    x[rng.random((n, 4)) < 0.02] = np.nan
    signal = np.nan_to_num(x[:, 0]) * 1.5 - np.nan_to_num(x[:, 1])
    y = (signal + rng.logistic(size=n) > 0).astype(float)
    ts = 1_700_000_000 + 60 * np.arange(n)
    return x, y, ts, ts + 5 * 60


Trained = tuple[np.ndarray, np.ndarray, TrainResult]


@pytest.fixture(scope="module")
def trained():
    x, y, ts, end = _data()
    result = train_xgb(
        x,
        y,
        ts=ts,
        label_end=end,
        feature_names=("a", "b", "c", "d"),
        config=FAST,
        bar_seconds=60,
        horizon_bars=5,
    )
    return x, y, result


def test_folds_when_walk_forward_then_train_labels_end_before_test_minus_embargo() -> None:
    ts = np.repeat(np.arange(1000) * 60, 3)
    end = ts + 5 * 60
    folds = walk_forward_folds(ts, end, n_folds=4, embargo_seconds=300)
    assert len(folds) == 4
    for fold in folds:
        assert end[fold.train].max() < fold.test_start - 300
        assert ts[fold.test].min() == fold.test_start
        assert not set(fold.train.tolist()) & set(fold.test.tolist())
    assert folds[0].test_end < folds[1].test_start


def test_train_when_signal_in_features_then_oof_auc_high_and_important(trained) -> None:
    _, _y, result = trained
    assert result.metrics["auc"] > 0.75
    assert len(result.fold_metrics) == 3
    assert np.isnan(result.oof[:500]).all()  # the first block is only ever trained on
    top = max(result.model.meta.importance, key=result.model.meta.importance.get)
    assert top in ("a", "b")
    assert result.model.meta.calibration is not None


def test_save_when_loaded_then_same_predictions_and_native_json(trained, tmp_path: Path) -> None:
    x, _, result = trained
    result.model.save(tmp_path / "xgb")
    assert (tmp_path / "xgb" / "model.json").read_text().startswith("{")
    loaded = XgbModel.load(tmp_path / "xgb")
    np.testing.assert_allclose(loaded.predict(x[:200]), result.model.predict(x[:200]), atol=1e-6)
    assert loaded.feature_names == ("a", "b", "c", "d")


def test_contributions_when_summed_then_equal_the_margin(trained) -> None:
    x, _, result = trained
    contrib = result.model.contributions(x[:50])
    raw = result.model.predict_raw(x[:50])
    np.testing.assert_allclose(contrib.sum(axis=1), logit(raw), atol=1e-3)
    explained = result.model.explain(x[:3], top=2)
    assert all(len(e) <= 2 for e in explained)
    assert {name for e in explained for name, _ in e} <= {"a", "b", "c", "d"}
    top = int(np.argmax(np.abs(contrib[0, :-1])))
    assert explained[0][0] == (("a", "b", "c", "d")[top], pytest.approx(contrib[0, top]))


def test_contributions_when_approximate_then_also_sum_to_the_margin_and_rank_alike(
    trained,
) -> None:
    x, _, result = trained
    exact = result.model.contributions(x[:200])
    approx = result.model.contributions(x[:200], approximate=True)
    np.testing.assert_allclose(approx.sum(axis=1), exact.sum(axis=1), atol=1e-3)
    assert not np.allclose(approx, exact, atol=1e-6)  # a different attribution, not a copy
    same_top = np.argmax(np.abs(approx[:, :-1]), axis=1) == np.argmax(np.abs(exact[:, :-1]), axis=1)
    assert same_top.mean() > 0.8
    assert result.model.explain(x[:3], top=2, approximate=True) != []


def test_load_when_model_file_corrupt_then_model_error_names_file(trained, tmp_path: Path) -> None:
    result = trained[2]
    result.model.save(tmp_path / "xgb")
    (tmp_path / "xgb" / "model.json").write_text("{not json")
    with pytest.raises(XgbModelError, match=r"model\.json"):
        XgbModel.load(tmp_path / "xgb")
    with pytest.raises(XgbModelError, match=r"meta\.json"):
        XgbModel.load(tmp_path / "missing")


def test_predict_when_wrong_width_then_model_error(trained) -> None:
    with pytest.raises(XgbModelError, match="expects 4 features"):
        trained[2].model.predict(np.zeros((2, 3)))


def test_train_when_single_class_then_data_error() -> None:
    x, _, ts, end = _data(500)
    with pytest.raises(XgbDataError, match="single class"):
        train_xgb(
            x,
            np.ones(500),
            ts=ts,
            label_end=end,
            feature_names=("a", "b", "c", "d"),
            config=FAST,
            bar_seconds=60,
            horizon_bars=5,
        )


def test_metrics_when_known_inputs_then_known_values() -> None:
    y = np.array([0, 0, 1, 1])
    assert auc(y, [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert auc(y, [0.5, 0.5, 0.5, 0.5]) == 0.5
    assert brier(y, [0, 0, 1, 1]) == 0.0
    assert ece(y, [0.5, 0.5, 0.5, 0.5]) == pytest.approx(0.0)


def test_logistic_when_fitted_then_recovers_coefficients() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(20_000, 2))
    y = (rng.random(20_000) < 1 / (1 + np.exp(-(0.5 + 2 * x[:, 0] - x[:, 1])))).astype(float)
    params = fit_logistic(x, y, l2=0.0)
    assert params.intercept == pytest.approx(0.5, abs=0.1)
    assert params.coef == pytest.approx((2.0, -1.0), abs=0.1)


def test_pca_when_fitted_then_first_component_captures_dominant_axis() -> None:
    rng = np.random.default_rng(2)
    base = rng.normal(size=(500, 1))
    x = np.hstack([base * 10, base * 10, rng.normal(size=(500, 3)) * 0.1])
    pca = fit_pca(x, 2)
    assert pca.explained_variance_ratio[0] > 0.95
    assert pca.transform(x).shape == (500, 2)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.integers(1, 300),
    missing=st.floats(0.0, 0.9),
    seed=st.integers(0, 10_000),
    fortran=st.booleans(),
)
def test_predict_raw_when_called_directly_then_inplace_predict_bit_for_bit(
    trained: Trained, rows: int, missing: float, seed: int, fortran: bool
) -> None:
    """predict_raw's own XGBoosterPredictFromDense call against Booster.inplace_predict."""
    _, _, result = trained
    model = result.model
    assert model._dense is not None  # the direct call is what is tested here
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 4)) * 3.0
    x[rng.random(x.shape) < missing] = np.nan
    x[rng.random(x.shape) < 0.2] = 0.0  # a value, not missing
    if fortran:
        x = np.asfortranarray(x)
    want = model.booster.inplace_predict(np.asarray(x, dtype=np.float32), missing=np.nan)
    got = model.predict_raw(x)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, np.asarray(want, dtype=np.float64))


@pytest.mark.parametrize("approximate", [False, True], ids=["exact", "approximate"])
def test_contributions_when_matrix_unnamed_then_same_as_named_and_validated(
    trained: Trained, approximate: bool
) -> None:
    """contributions() builds its DMatrix without feature names (columns by position): the
    values are those of a DMatrix named as the booster and validated against it."""
    import xgboost as xgb

    x, _, result = trained
    model = result.model
    rows = np.array(x[:120], dtype=np.float64)
    rows[::7, 1] = np.nan
    named = xgb.DMatrix(
        np.asarray(rows, dtype=np.float32), feature_names=list(model.feature_names), missing=np.nan
    )
    want = model.booster.predict(named, pred_contribs=True, approx_contribs=approximate)
    np.testing.assert_array_equal(model.contributions(rows, approximate=approximate), want)


@settings(max_examples=200, deadline=None)
@given(
    rows=st.integers(0, 30),
    columns=st.integers(1, 60),
    top=st.integers(0, 70),
    spread=st.integers(1, 5),
    density=st.floats(0.0, 1.0),
    nan=st.booleans(),
    seed=st.integers(0, 10_000),
)
def test_top_by_magnitude_when_ties_and_zeros_then_the_stable_sort_order(
    rows: int, columns: int, top: int, spread: int, density: float, nan: bool, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    values = rng.integers(-spread, spread + 1, size=(rows, columns)).astype(np.float64) / 4.0
    values[rng.random(values.shape) > density] = 0.0  # rows with fewer non-zero than top
    if nan and rows:
        values[0, rng.integers(columns)] = np.nan
    want = np.argsort(-np.abs(values), axis=1, kind="stable")[:, :top]
    np.testing.assert_array_equal(top_by_magnitude(values, top), want)
