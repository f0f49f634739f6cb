"""Invertible preprocessing layers: exact inverses on their domain, point masses, saving."""

import keras
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from ddsim_gan.data.preprocessing import (ConditionEncoder, LogScale, QuantileTransform,
                                          Standardize)


def _np(x):
    return keras.ops.convert_to_numpy(x)


@settings(max_examples=30, deadline=None)
@given(hnp.arrays(np.float32, (7, 3), elements=st.floats(0, 1e4, width=32)),
       st.floats(0.01, 10), st.floats(1, 20))
def test_log_scale_inverts_on_non_negative_values(x, scale, norm):
    layer = LogScale(scale, norm)
    np.testing.assert_allclose(_np(layer(layer(x), inverse=True)), x, rtol=2e-5, atol=1e-5)


@settings(max_examples=30, deadline=None)
@given(hnp.arrays(np.float32, (20, 2), elements=st.floats(-1e3, 1e3, width=32)))
def test_standardize_inverts_and_has_unit_scale(x):
    layer = Standardize((2,)).adapt(x)
    y = _np(layer(x))
    np.testing.assert_allclose(_np(layer(y, inverse=True)), x, rtol=1e-4, atol=1e-2)
    spread = x.std(axis=0) > 1e-3
    np.testing.assert_allclose(y.std(axis=0)[spread], 1.0, rtol=1e-2)


def test_standardize_keeps_unit_scale_for_spreads_float32_cannot_divide_by():
    tiny = np.finfo(np.float32).tiny                      # 1.2e-38, the smallest normal
    x = np.float32([[0.0, 1000.0, 5.0], [tiny, 1000.0 + 6e-5, 6.0], [tiny, 1000.0, 7.0]])
    layer = Standardize((3,)).adapt(x)
    np.testing.assert_array_equal(_np(layer.std)[:2], [1.0, 1.0])
    y = _np(layer(x))
    assert np.isfinite(y).all()
    np.testing.assert_allclose(y[:, 2], [-1.2247449, 0.0, 1.2247449], rtol=1e-6)
    np.testing.assert_allclose(_np(layer(y, inverse=True)), x, rtol=1e-6, atol=1e-30)


def test_quantile_transform_gaussianizes_and_inverts_inside_its_range():
    rng = np.random.default_rng(0)
    data = np.stack([rng.lognormal(0, 2, 20_000), rng.uniform(-3, 7, 20_000)], 1)
    layer = QuantileTransform(2, n_quantiles=500).adapt(data)
    y = _np(layer(data.astype("float32")))
    np.testing.assert_allclose(y.mean(axis=0), 0.0, atol=0.02)
    np.testing.assert_allclose(y.std(axis=0), 1.0, atol=0.03)
    inside = ((data > np.quantile(data, 0.001, axis=0))
              & (data < np.quantile(data, 0.999, axis=0))).all(axis=1)
    back = _np(layer(y, inverse=True))
    np.testing.assert_allclose(back[inside], data[inside], rtol=1e-3, atol=1e-3)
    # beyond the training range the map clamps instead of extrapolating
    far = _np(layer(np.float32([[1e9, 1e9]]), inverse=False))
    assert np.all(np.abs(far) < 4.0)


def test_quantile_transform_reproduces_a_point_mass():
    rng = np.random.default_rng(1)
    data = np.where(rng.random(10_000) < 0.3, 0.0, rng.normal(5, 1, 10_000))[:, None]
    layer = QuantileTransform(1, n_quantiles=400).adapt(data)
    generated = _np(layer(rng.standard_normal((50_000, 1)).astype("float32"), inverse=True))
    assert abs((generated == 0).mean() - 0.3) < 0.01
    real = _np(layer(np.float32([[0.0], [0.0]])))
    assert real[0, 0] == real[1, 0]          # the spike is one point for the critic


def test_condition_encoder_one_hot_log_and_quantile_columns(tmp_path):
    rng = np.random.default_rng(2)
    conditions = np.stack([rng.uniform(5, 235, 5000), rng.integers(0, 2, 5000),
                           rng.lognormal(3, 1, 5000)], 1).astype("float32")
    encoder = ConditionEncoder([0, 2, 0], log=[True, False, False],
                               quantile=[False, False, True]).adapt(conditions)
    encoded = _np(encoder(conditions))
    assert encoded.shape == (5000, 4) and encoder.output_width == 4
    np.testing.assert_allclose(encoded[:, 0].mean(), 0.0, atol=1e-3)
    np.testing.assert_array_equal(encoded[:, 1:3].argmax(axis=1), conditions[:, 1])
    np.testing.assert_allclose(encoded[:, 3].std(), 1.0, atol=0.05)
    model = keras.Sequential([keras.Input((3,)), encoder])
    model.save(tmp_path / "encoder.keras")
    loaded = keras.saving.load_model(tmp_path / "encoder.keras")
    np.testing.assert_allclose(_np(loaded(conditions)), encoded, rtol=1e-6)
