"""Issue 4's metric functions against values worked out by hand: seed 003's hits, nhits and
per-layer occupancy, TPC Gaussian moments, relative and binned deviations of means."""

import numpy as np
import pytest

from ddsim_gan.detectors import get as get_detector
from ddsim_gan.evaluation import compare
from ddsim_gan.evaluation import observables as O
from ddsim_gan.evaluation.metrics import (binned_mean_deviation, binned_mean_deviations,
                                          equal_population_edges, relative_mean_deviation)


def _two_events():
    """Two events of 3 layers x 2 x 2 cells (layer axis 0)."""
    a = np.zeros((3, 2, 2))
    a[0, 0, 0] = 0.04     # below 5 % of the peak 1.0: no hit
    a[1, 0, 0] = 1.0      # the peak
    a[1, 1, 1] = 0.06     # a hit
    a[2, 0, 1] = 0.05     # exactly 5 %: not above, no hit
    b = np.zeros((3, 2, 2))
    b[0, 1, 0] = 10.0     # peak in layer 0
    b[2, :, :] = 0.6      # four hits (> 0.5)
    return np.stack([a, b])


def test_seed_hits_count_and_occupancy_by_hand():
    samples = _two_events()
    hits = O.seed_hits(samples)
    assert hits.sum() == 2 + 5
    np.testing.assert_array_equal(O.seed_hit_count(samples), [2.0, 5.0])
    np.testing.assert_array_equal(O.layer_hit(samples, 0),
                                  [[False, True, False], [True, False, True]])
    np.testing.assert_allclose(O.layer_occupancy(samples, 0), [0.5, 0.5, 0.5])
    # the layer axis elsewhere: same answer with the layers moved last
    moved = np.moveaxis(samples, 1, -1)
    np.testing.assert_allclose(O.layer_occupancy(moved, 2), [0.5, 0.5, 0.5])
    # an empty event has no hit; another fraction moves the cut
    empty = np.zeros((1, 3, 2, 2))
    assert O.seed_hit_count(empty)[0] == 0 and not O.layer_hit(empty, 0).any()
    np.testing.assert_array_equal(O.seed_hit_count(samples, fraction=0.03), [4.0, 5.0])
    with pytest.raises(ValueError, match="layer_axis"):
        O.layer_hit(samples, 3)


def test_seed_hits_agree_with_the_detector_definition():
    detector = get_detector("siw_ecal")
    conditions, samples = detector.simulate(64, seed=1)
    np.testing.assert_array_equal(O.seed_hits(samples), detector.hits(samples))
    occupancy = O.layer_occupancy(samples, 0)
    assert occupancy.shape == (15,) and 0.0 < occupancy[0] < 1.0


def test_gaussian_moments_by_hand():
    image = np.zeros((1, 3, 4))
    image[0, 0, 1] = 1.0     # pad 0, time 1
    image[0, 2, 3] = 3.0     # pad 2, time 3
    image[0, 1, 0] = -5.0    # negative cells are clipped to 0
    m = O.gaussian_moments(image, cell_size=(5.0, 100.0))
    # pad centres (i + 1/2) * 5 = 2.5, 12.5; weights 1/4, 3/4
    assert m["mean_pad"][0] == pytest.approx(0.25 * 2.5 + 0.75 * 12.5)
    assert m["width_pad"][0] == pytest.approx(np.sqrt(0.25 * 0.75) * 10.0)
    assert m["mean_time"][0] == pytest.approx(0.25 * 150.0 + 0.75 * 350.0)
    assert m["width_time"][0] == pytest.approx(np.sqrt(0.25 * 0.75) * 200.0)
    # two points on a line: covariance = width_pad * width_time (correlation +1)
    assert m["cov_pad_time"][0] == pytest.approx(m["width_pad"][0] * m["width_time"][0])
    assert m["total"][0] == 4.0
    empty = O.gaussian_moments(np.zeros((2, 3, 4)))
    assert all((v == 0).all() for v in empty.values())
    with pytest.raises(ValueError, match="2D images"):
        O.gaussian_moments(np.zeros((2, 3, 4, 5)))
    units = O.gaussian_moment_units(("mm", "ns"), "ADC")
    assert units["cov_pad_time"] == "mm ns" and units["total"] == "ADC"


def test_relative_mean_deviation_by_hand():
    assert relative_mean_deviation([1.0, 3.0], [2.2, 2.2]) == pytest.approx(0.1)
    assert relative_mean_deviation([1.0, 3.0], [1.8, 1.8]) == pytest.approx(0.1)
    # booleans: the occupancy of a layer
    assert relative_mean_deviation([True, False, False, False],
                                   [True, True, False, False]) == pytest.approx(1.0)
    assert relative_mean_deviation([0.0, 0.0], [1.0]) == float("inf")
    assert np.isnan(relative_mean_deviation([0.0], [0.0]))
    result = compare("mean_rel_dev:x", relative_mean_deviation, np.ones(50), np.full(50, 1.01),
                     np.ones(50), bar=0.02)
    assert result.value == pytest.approx(0.01) and result.floor == 0.0 and result.passed


def test_binned_mean_deviations_by_hand():
    condition = np.array([0.0, 1.0, 2.0, 3.0])
    ref = np.array([10.0, 10.0, -1.0, 1.0])     # bin 0: mean 10, sd 0; bin 1: mean 0, sd 1
    gen = np.array([11.0, 11.0, 0.5, 0.5])      # bin 0: mean 11; bin 1: mean 0.5
    d = binned_mean_deviations(ref, gen, condition, bins=[0.0, 2.0, 4.0])
    np.testing.assert_allclose(d["mean_ref"], [10.0, 0.0])
    np.testing.assert_allclose(d["mean_gen"], [11.0, 0.5])
    np.testing.assert_allclose(d["scale"], [10.0, 1.0])        # max(|mean|, sd)
    np.testing.assert_allclose(d["deviation"], [0.1, 0.5])
    assert d["worst"] == pytest.approx(0.5) and d["worst_bin"] == 1
    np.testing.assert_array_equal(d["n_ref"], [2, 2])
    # the (value, condition) rows form for compare(): the worst bin
    rows = lambda v: np.stack([v, condition], axis=1)  # noqa: E731
    assert binned_mean_deviation(rows(ref), rows(gen), bins=[0.0, 2.0, 4.0]) == pytest.approx(0.5)
    # an empty generated bin is NaN, not a silent zero; a mismatch of lengths is an error
    d = binned_mean_deviations(ref, gen[:2], condition, condition[:2], bins=[0.0, 2.0, 4.0])
    assert np.isnan(d["deviation"][1]) and d["worst"] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="one condition per value"):
        binned_mean_deviations(ref, gen, condition[:3])


def test_equal_population_edges():
    values = np.arange(100.0)
    edges = equal_population_edges(values, 4)
    counts = np.histogram(values, edges)[0]
    np.testing.assert_array_equal(counts, [25, 25, 25, 25])
    assert len(equal_population_edges(np.ones(10), 5)) == 2      # constant: one bin
