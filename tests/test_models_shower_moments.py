"""The shower-moment penalty and the straight-through band of the components' readout."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from ddsim_gan import detectors
from ddsim_gan.evaluation import observables as O
from ddsim_gan.models.components import ShowerComponentsHead
from ddsim_gan.models.penalties import ShowerMomentPenalty, StepTensors


@pytest.fixture(scope="module")
def showers():
    detector = detectors.get("darkshine")
    _, samples = detector.simulate(400, seed=5)
    return detector, samples


def _step(real, fake):
    return StepTensors(None, None, tf.constant(real), tf.constant(fake), None,
                       to_physical=lambda x: x)


def test_observables_are_the_evaluation_ones_in_cells(showers):
    detector, samples = showers
    penalty = ShowerMomentPenalty.for_detector(detector)
    got = penalty.observables(tf.constant(samples)).numpy()
    reference = O.shower_observables(samples, detector)
    cell = detector.cell_size[0]
    np.testing.assert_allclose(got[:, 0], reference["centre_x"] / cell, atol=1e-3)
    np.testing.assert_allclose(got[:, 1], reference["width_x"] / cell, atol=2e-3)
    np.testing.assert_allclose(got[:, 2], reference["centre_y"] / detector.cell_size[1],
                               atol=1e-3)
    np.testing.assert_allclose(got[:, 4:], O.layer_energies(samples, 2), rtol=1e-4, atol=1e-3)


def test_a_shift_by_one_cell_costs_one_over_the_variance(showers):
    detector, samples = showers
    penalty = ShowerMomentPenalty.for_detector(detector)
    assert float(penalty(_step(samples, samples))) == pytest.approx(0.0, abs=1e-7)
    # a shower moved by one crystal along x (wrap-around cells are empty for these showers)
    inner = samples.copy()
    inner[:, [0, -1]] = 0.0
    shifted = np.roll(inner, 1, axis=1)
    centre = penalty.observables(tf.constant(inner)).numpy()[:, 0]
    expected = 1.0 / centre.var() / penalty.observables(tf.constant(inner)).shape[1]
    assert float(penalty(_step(inner, shifted))) == pytest.approx(expected, rel=1e-3)


def test_the_gradient_moves_the_generated_centre_towards_the_real_one(showers):
    detector, samples = showers
    penalty = ShowerMomentPenalty.for_detector(detector)
    offset = tf.Variable(0.0)
    x = np.arange(20, dtype=np.float32)
    real = tf.constant(samples)

    def fake():   # the real showers reweighted by exp(offset * x): the centre follows offset
        return real * tf.exp(offset * x)[None, :, None, None]

    at_rest = penalty(StepTensors(None, None, real, fake(), None, to_physical=lambda v: v))
    assert float(at_rest) == pytest.approx(0.0, abs=1e-7)
    offset.assign(0.2)
    with tf.GradientTape() as tape:
        value = penalty(StepTensors(None, None, real, fake(), None, to_physical=lambda v: v))
    assert float(value) > 0
    assert float(tape.gradient(value, offset)) > 0    # descent brings the offset back to 0


def test_the_penalty_round_trips_through_its_config(showers):
    detector, _ = showers
    penalty = ShowerMomentPenalty.for_detector(detector, weight=2.5)
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(penalty))
    assert again.get_config() == penalty.get_config()
    assert again.transverse_axes == [0, 1] and again.layer_axis == 2


def test_threshold_band_keeps_the_readout_and_passes_the_gradient_below_it():
    values = tf.Variable([0.2, 0.8, 1.5, -0.3])    # threshold 1: below, in the band, above
    for band, expected in ((0.0, [0.0, 0.0, 1.0, 0.0]), (0.5, [0.0, 1.0, 1.0, 0.0])):
        head = ShowerComponentsHead((4, 4, 2), 2, (1.0, 1.0, 1.0), threshold=1.0,
                                    threshold_band=band)
        with tf.GradientTape() as tape:
            out = head.read_out(values)
            total = tf.reduce_sum(out)
        np.testing.assert_allclose(out.numpy(), [0.0, 0.0, 1.5, 0.0])
        np.testing.assert_allclose(tape.gradient(total, values).numpy(), expected)
        assert ShowerComponentsHead.from_config(head.get_config()).threshold_band == band


def test_the_hit_term_counts_the_hits_and_its_gradient_reaches_empty_cells(showers):
    detector, samples = showers
    penalty = ShowerMomentPenalty.for_detector(detector, hits=True)
    counted = penalty.observables(tf.constant(samples)).numpy()[:, -1]
    np.testing.assert_array_equal(counted, O.shower_observables(samples, detector)["n_hits"])
    cells = tf.Variable(samples[:8])
    with tf.GradientTape() as tape:
        hits = tf.reduce_sum(penalty.hit_count(cells))
    gradient = tape.gradient(hits, cells).numpy()
    assert (gradient[samples[:8] == 0] > 0.1).all()     # raising an empty cell adds a hit
    assert ShowerMomentPenalty.from_config(penalty.get_config()).hit_threshold == 1.0
    # fewer generated hits than real ones costs; the count is exact, so no cost at equality
    fewer = np.where(samples < 3.0, 0.0, samples).astype(np.float32)
    plain = ShowerMomentPenalty.for_detector(detector)
    assert float(penalty(_step(samples, fewer))) > float(plain(_step(samples, fewer)))
    with pytest.raises(ValueError, match="threshold"):
        ShowerMomentPenalty.for_detector(detectors.get("lhcb_rich"), hits=True)


def test_the_correlation_term_sees_a_joint_change_that_leaves_the_marginals(showers):
    detector, samples = showers
    penalty = ShowerMomentPenalty.for_detector(detector, correlation_weight=1.0)
    plain = ShowerMomentPenalty.for_detector(detector)
    # pairing each event's last layers with another event's: the same marginals of every
    # observable except the centres and widths, which the rest of the shower mostly sets
    shuffled = samples.copy()
    shuffled[..., 6:] = samples[np.random.default_rng(0).permutation(len(samples))][..., 6:]
    assert float(penalty(_step(samples, samples))) == pytest.approx(0.0, abs=1e-6)
    extra = float(penalty(_step(samples, shuffled))) - float(plain(_step(samples, shuffled)))
    assert extra > 0.01
    again = ShowerMomentPenalty.from_config(penalty.get_config())
    assert again.correlation_weight == 1.0


def test_asymmetry_moments_match_the_detector_asymmetry_and_round_trip():
    from ddsim_gan.models.impact_moments import AsymmetryMomentPenalty

    detector = detectors.get("lhcb_ecal")
    conditions, samples = detector.simulate(300, seed=8)
    penalty = AsymmetryMomentPenalty.for_lhcb_ecal(detector, weight=2.0)
    got = penalty.observables(tf.constant(samples), tf.constant(conditions)).numpy()
    assert got.shape == (300, 4 + 2)                   # centre, width per axis; two asymmetries
    np.testing.assert_allclose(got[:, 4], detector.asymmetry(samples, conditions), atol=1e-5)
    np.testing.assert_allclose(got[:, 5], detector.asymmetry(samples, conditions,
                                                             orthogonal=True), atol=1e-5)
    step = StepTensors(tf.constant(conditions), None, tf.constant(samples),
                       tf.constant(samples[::-1].copy()), None, to_physical=lambda x: x)
    # the same showers in another order: centres and widths keep their batch moments, but each
    # shower now sits at another event's conditions, so only the asymmetries mismatch
    assert float(penalty(_step_with(conditions, samples))) == pytest.approx(0.0, abs=1e-9)
    assert float(penalty(step)) > 1e-2
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(penalty))
    assert isinstance(restored, AsymmetryMomentPenalty)
    assert restored.get_config() == penalty.get_config()


def _step_with(conditions, samples):
    return StepTensors(tf.constant(conditions), None, tf.constant(samples), tf.constant(samples),
                       None, to_physical=lambda x: x)
