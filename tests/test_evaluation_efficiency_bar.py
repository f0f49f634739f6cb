"""Seed 001's efficiency-ratio bar in bins of the conditions, against hand-computed values."""

import numpy as np
import pytest
from scipy import stats

from ddsim_gan.evaluation import metrics as M


def test_bin_index_and_product_bins():
    assert M.bin_index([0.0, 0.5, 1.0, 2.0, 2.5, -1.0], [0.0, 1.0, 2.0]).tolist() == \
        [0, 0, 1, 1, -1, -1]                      # the last bin is closed, outside is -1
    conditions = np.array([[0.5, 10.0], [1.5, 10.0], [0.5, 30.0], [1.5, 30.0], [1.5, 99.0]])
    edges = {0: [0.0, 1.0, 2.0], 1: [0.0, 20.0, 40.0]}
    assert M.product_bins(conditions, edges).tolist() == [0, 2, 1, 3, -1]   # row-major
    assert M.bin_labels(edges, ("P", "eta")) == ["P 0-1, eta 0-20", "P 0-1, eta 20-40",
                                                 "P 1-2, eta 0-20", "P 1-2, eta 20-40"]
    with pytest.raises(ValueError, match="increase"):
        M.bin_index([1.0], [0.0, 0.0, 1.0])


def test_ratio_test_error_by_hand():
    # eps = 0.5, n_ref = n_gen = 4: sqrt(0.25 * (1/4 + 1/4)) / 0.5 = sqrt(0.125) / 0.5
    assert M.ratio_test_error(0.5, 4, 4) == pytest.approx(np.sqrt(0.125) / 0.5)
    adjusted = (10_000 * 0.1 + 2) / (10_000 + 4)       # Agresti-Coull
    assert M.ratio_test_error(0.1, 10_000, 30_000) == pytest.approx(
        np.sqrt(adjusted * (1 - adjusted) * (1e-4 + 1 / 3e4)) / adjusted)
    # eps = 1 in a bin of 4: (4 + 2) / 8 = 0.75, not a zero error
    assert M.ratio_test_error(1.0, 4, 4) == pytest.approx(np.sqrt(0.75 * 0.25 * 0.5) / 0.75)
    assert np.isinf(M.ratio_test_error(0.0, 10, 10))
    assert np.isinf(M.ratio_test_error(0.5, 0, 10))
    # the training sample's binomial error adds: eps = 0.5, 4 + 4 + 2 tracks
    assert M.ratio_test_error(0.5, 4, 4, 2) == pytest.approx(np.sqrt(0.25 * 1.0) / 0.5)
    assert np.isinf(M.ratio_test_error(0.5, 4, 4, 0))


def _tiny():
    """Two bins of one condition, one group; values chosen so every number is easy by hand."""
    ref = np.array([1, 2, 3, 4, 5, 6, 7, 8], float)[:, None]
    gen = np.array([1, 1, 3, 5, 6, 7, 8, 9], float)[:, None]
    conditions = np.array([0.5] * 4 + [1.5] * 4)[:, None]
    return ref, gen, conditions


def test_group_cuts_by_hand():
    ref, gen, conditions = _tiny()
    bar = M.efficiency_ratio_bar(ref, gen, conditions, conditions, {0: [0.0, 1.0, 2.0]},
                                 quantiles=(25, 50), max_error=1.0)
    # cuts over all 8 reference values: 25th percentile 2.75, 50th 4.5
    assert bar["cuts"][0, 0].tolist() == pytest.approx([2.75, 4.5])
    # bin 0: ref {1,2,3,4} above 2.75 -> 1/2, above 4.5 -> 0; gen {1,1,3,5} -> 1/2 and 1/4
    # bin 1: ref {5..8} -> 1 and 1; gen {6,7,8,9} -> 1 and 1
    assert bar["eff_ref"][0, :, 0].tolist() == [[0.5, 0.0], [1.0, 1.0]]
    assert bar["eff_gen"][0, :, 0].tolist() == [[0.5, 0.25], [1.0, 1.0]]
    assert bar["ratio"][0, 0, 0, 0] == pytest.approx(1.0)
    # error: sqrt((0.25/0.5)^2 + (0.5 * 0.25 / 0.25)^2) = sqrt(0.5), binomial sqrt(0.25/4) each
    assert bar["error"][0, 0, 0, 0] == pytest.approx(np.sqrt(0.5))
    assert bar["expected_error"][0, 0, 0, 0] == pytest.approx(np.sqrt(0.125) / 0.5)
    # eps_ref = 0 cannot be tested; eps_ref = 1 (error 0.41 in a bin of 4) is
    assert bar["tested"][0, :, 0].tolist() == [[True, False], [True, True]]
    assert bar["n_tested"] == 3 and bar["n_failed"] == 0 and bar["passed"]
    assert bar["n_ref"].tolist() == [[4, 4]] and bar["n_gen"].tolist() == [[4, 4]]
    assert bar["max_deviation"] == pytest.approx(0.0)
    excluded = bar["excluded_bins"]
    assert len(excluded) == 1 and excluded[0]["bin"] == "c0 0-1"
    assert excluded[0]["untested_quantiles"] == [50.0] and excluded[0]["n_untested"] == 1
    # a perfect generator fails the eps = 0.5 ratio with P(|N(0, 0.707)| > 0.03), each of the
    # two eps = 1 ratios with P(|N(0, 0.408)| > 0.03)
    assert bar["expected_false_failures"] == pytest.approx(
        2 * stats.norm.sf(0.03 / (np.sqrt(0.125) / 0.5))
        + 4 * stats.norm.sf(0.03 / (np.sqrt(0.75 * 0.25 * 0.5) / 0.75)))


def test_bin_cuts_tolerance_and_the_default_max_error():
    ref, gen, conditions = _tiny()
    bar = M.efficiency_ratio_bar(ref, gen, conditions, conditions, {0: [0.0, 1.0, 2.0]},
                                 quantiles=(50,), cut_scope="bin", max_error=1.0)
    # per-bin medians 2.5 and 6.5: ref 1/2 and 1/2; gen {1,1,3,5} -> 1/2, {6,7,8,9} -> 3/4
    assert bar["eff_gen"][0, :, 0, 0].tolist() == [0.5, 0.75]
    assert bar["ratio"][0, :, 0, 0].tolist() == pytest.approx([1.0, 1.5])
    assert bar["n_failed"] == 1 and not bar["passed"]
    assert bar["worst"]["ratio"] == pytest.approx(1.5) and bar["worst"]["bin"] == "c0 1-2"
    loose = M.efficiency_ratio_bar(ref, gen, conditions, conditions, {0: [0.0, 1.0, 2.0]},
                                   quantiles=(50,), cut_scope="bin", max_error=1.0,
                                   tolerance=0.6)
    assert loose["passed"]
    # default: tolerance / 3.29, far below the errors of 4 events: nothing tested, no pass
    default = M.efficiency_ratio_bar(ref, gen, conditions, conditions, {0: [0.0, 1.0, 2.0]},
                                     quantiles=(50,), cut_scope="bin")
    assert default["max_error"] == pytest.approx(0.03 / 3.29)
    assert default["n_tested"] == 0 and not default["passed"]
    assert all("binomial error" in e["reason"] for e in default["excluded_bins"])


def test_groups_labels_and_generated_conditions_of_their_own():
    rng = np.random.default_rng(0)
    n = 40_000
    conditions = np.stack([rng.uniform(0, 2, n), rng.integers(0, 2, n)], axis=1)
    ref = rng.normal(conditions[:, :1] + 3 * conditions[:, 1:], 1.0)
    gen_conditions = conditions[rng.permutation(n)]
    gen = rng.normal(gen_conditions[:, :1] + 3 * gen_conditions[:, 1:], 1.0)
    bar = M.efficiency_ratio_bar(ref, gen, conditions, gen_conditions, {0: [0.0, 1.0, 2.0]},
                                 group_index=1, group_labels=("a", "b"), names=("v",),
                                 quantiles=(10, 50))
    assert bar["groups"] == ["a", "b"] and bar["names"] == ["v"]
    assert bar["n_tested"] > 0 and bar["passed"]                   # same law: passes
    shifted = M.efficiency_ratio_bar(ref, gen + 0.3, conditions, gen_conditions,
                                     {0: [0.0, 1.0, 2.0]}, group_index=1, quantiles=(10, 50))
    assert not shifted["passed"] and shifted["n_failed"] > 0
    with pytest.raises(ValueError, match="one row of conditions per event"):
        M.efficiency_ratio_bar(ref, gen, conditions[:10], gen_conditions, {0: [0.0, 2.0]})
    with pytest.raises(ValueError, match="cut_scope"):
        M.efficiency_ratio_bar(ref, gen, conditions, gen_conditions, {0: [0.0, 2.0]},
                               cut_scope="event")


def test_training_tracks_join_the_test_error_and_the_strict_count_stays():
    ref, gen, conditions = _tiny()
    # bin 0 holds 2 training tracks, bin 1 holds 6 (one outside every bin, ignored)
    train = np.array([0.2, 0.7] + [1.1] * 6 + [5.0])[:, None]
    options = dict(quantiles=(25,), cut_scope="group")
    bar = M.efficiency_ratio_bar(ref, gen, conditions, conditions, {0: [0.0, 1.0, 2.0]},
                                 max_error=0.6, train_conditions=train, **options)
    assert bar["n_train"].tolist() == [[2, 6]]
    # bin 0, eps = 1/2: sqrt(0.25 (1/4 + 1/4 + 1/2)) / 0.5 = 1 > 0.6, untested;
    # bin 1, eps = 1 (Agresti-Coull 0.75): sqrt(0.1875 (1/4 + 1/4 + 1/6)) / 0.75 = 0.471
    assert bar["expected_error"][0, :, 0, 0] == pytest.approx(
        [1.0, np.sqrt(0.1875 * (0.5 + 1 / 6)) / 0.75])
    assert bar["tested"][0, :, 0, 0].tolist() == [False, True]
    assert bar["excluded_bins"][0]["n_train"] == 2
    assert "2 training" in bar["excluded_bins"][0]["reason"]
    # "strict" is the bar without the training term (errors 0.707 and 0.408: bin 1 tested)
    plain = M.efficiency_ratio_bar(ref, gen, conditions, conditions, {0: [0.0, 1.0, 2.0]},
                                   max_error=0.6, **options)
    assert bar["strict"] == {"n_tested": plain["n_tested"], "n_failed": plain["n_failed"],
                             "max_deviation": pytest.approx(plain["max_deviation"])}
    assert plain["strict"] is None and plain["n_train"] is None
    # at max_error 0.8 bin 0 is tested strictly (0.707) and not with its 2 training tracks (1.0)
    worse = M.efficiency_ratio_bar(ref, gen, conditions, conditions, {0: [0.0, 1.0, 2.0]},
                                   max_error=0.8, train_conditions=train, **options)
    strict = M.efficiency_ratio_bar(ref, gen, conditions, conditions, {0: [0.0, 1.0, 2.0]},
                                    max_error=0.8, **options)
    assert strict["n_tested"] == 2 and worse["n_tested"] == 1
