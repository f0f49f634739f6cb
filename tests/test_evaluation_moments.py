"""Binned conditional moments (issue 3's DarkSide bar) against numbers computed by hand."""

import numpy as np
import pytest

from ddsim_gan.evaluation.metrics import conditional_moment_metrics, conditional_moments

# (energy, type): four NR events in [0, 10), two ER events in [10, 20), one NR event in [10, 20)
# (a bin too small for min_events=2), one event beyond the last edge (ignored)
CONDITIONS = np.array([[1, 0], [2, 0], [3, 0], [4, 0], [12, 1], [20, 1], [15, 0], [25, 0]],
                      float)
REF = np.array([[1, 2], [2, 4], [3, 6], [4, 8], [1, 1], [3, 2], [9, 9], [7, 7]], float)
GEN = np.array([[2, 8], [3, 6], [4, 4], [5, 2], [0, 1], [4, 2], [9, 9], [7, 7]], float)


def _moments(**kwargs):
    return conditional_moments(CONDITIONS, REF, GEN, [0, 10, 20], category_index=1,
                               names=["a", "b"], min_events=2, **kwargs)


def test_per_bin_means_widths_and_correlations():
    m = _moments()
    assert [(b["category"], b["low"], b["n_ref"]) for b in m["bins"]] == [(0, 0, 4), (1, 10, 2)]
    # NR [0, 10): a = 1..4 vs 2..5; b = 2,4,6,8 vs 8,6,4,2
    np.testing.assert_allclose(m["mean_ref"][0], [2.5, 5.0])
    np.testing.assert_allclose(m["std_ref"][0], [np.sqrt(1.25), np.sqrt(5.0)])
    np.testing.assert_allclose(m["mean_dev"][0], [0.4, 0.0])
    np.testing.assert_allclose(m["width_dev"][0], [0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(m["corr_ref"][0], [1.0])
    np.testing.assert_allclose(m["corr_gen"][0], [-1.0])
    np.testing.assert_allclose(m["corr_diff"][0], [2.0])
    # ER [10, 20] (the last edge is inside): a = 1, 3 vs 0, 4 (std 1 vs 2); b the same
    np.testing.assert_allclose(m["mean_dev"][1], [0.0, 0.0])
    np.testing.assert_allclose(m["width_dev"][1], [1.0, 0.0])
    np.testing.assert_allclose(m["corr_diff"][1], [0.0], atol=1e-12)
    # statistical errors: sqrt(var_r/n_r + var_g/n_g)/|mean_r|, sqrt(1/2n_r + 1/2n_g)
    np.testing.assert_allclose(m["mean_dev_error"][0, 0], np.sqrt(1.25 / 4 * 2) / 2.5)
    np.testing.assert_allclose(m["width_dev_error"][:, 0], [0.5, np.sqrt(0.5)])
    assert m["pairs"] == ["a-b"]


def test_worst_bins_and_excluded_bins():
    m = _moments()
    assert m["worst"]["mean:a"]["value"] == pytest.approx(0.4)
    assert m["worst"]["mean:a"]["bin"]["category"] == 0
    assert m["worst"]["width:a"]["value"] == pytest.approx(1.0)
    assert m["worst"]["width:a"]["bin"] == {"category": 1, "low": 10.0, "high": 20.0,
                                            "n_ref": 2, "n_gen": 2}
    assert m["worst"]["corr:a-b"]["value"] == pytest.approx(2.0)
    assert [(e["category"], e["low"], e["n_ref"]) for e in m["excluded"]] == [(0, 10.0, 1),
                                                                             (1, 0.0, 0)]


def test_generated_sample_binned_by_its_own_conditions():
    m = conditional_moments(CONDITIONS[:4], REF[:4], GEN[:2], [0, 10], min_events=2,
                            gen_conditions=CONDITIONS[:2])
    np.testing.assert_allclose(m["mean_gen"][0], [2.5, 7.0])
    with pytest.raises(ValueError, match="one per event"):
        conditional_moments(CONDITIONS, REF, GEN[:3], [0, 10])
    with pytest.raises(ValueError, match="increase"):
        conditional_moments(CONDITIONS, REF, GEN, [10, 0])


def test_summary_rows_with_bars_and_floor():
    rows = {r.name: r for r in conditional_moment_metrics(
        CONDITIONS, REF, GEN, REF, [0, 10, 20], mean_bar=0.5, width_bar=0.03, corr_bar=0.05,
        category_index=1, names=["a", "b"], min_events=2)}
    assert set(rows) == {"worst_mean_dev:a", "worst_mean_dev:b", "worst_width_dev:a",
                         "worst_width_dev:b", "worst_corr_diff:a-b"}
    assert rows["worst_mean_dev:a"].value == pytest.approx(0.4)
    assert rows["worst_mean_dev:a"].passed is True
    assert rows["worst_width_dev:a"].passed is False
    assert rows["worst_corr_diff:a-b"].passed is False
    assert rows["worst_mean_dev:a"].floor == pytest.approx(0.0)  # ref2 = ref
    assert rows["worst_width_dev:a"].extra["n_bins"] == 2
    assert rows["worst_width_dev:a"].to_dict()["bar"] == 0.03
