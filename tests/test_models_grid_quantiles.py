"""GridQuantileHead: inverse-CDF tables at the nodes of a condition grid, interpolated."""

import importlib.util
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from scipy.special import erfinv

from ddsim_gan.models.grid_quantiles import (GridQuantileHead, GridRingTiesHead,
                                             weighted_quantiles)
from ddsim_gan.models.heads import QuantileHead
from model_families import recipe_module

RICH = dict(hypotheses=[(0, [0.01, 0.02]), (1, [2.0, 3.3]), (2, [9.3, 15.6]), (3, [17.7, 29.7])],
            below_column=4, pion_thresholds=[2.6, 4.4], acceptance=[(1.8, 4.5), (2.7, 5.0)])
LOG_P = (0, np.geomspace(1.0, 100.0, 9).tolist(), True)


def _peak_moving_with_momentum(n=200_000, seed=0):
    """x ~ N(2 log P, 1) for category 0 and N(-log P, 2) for category 1, P log-uniform."""
    rng = np.random.default_rng(seed)
    momentum = np.exp(rng.uniform(0.0, np.log(100.0), n))
    category = rng.integers(0, 2, n)
    x = np.where(category == 0, 2.0 * np.log(momentum) + rng.normal(size=n),
                 -np.log(momentum) + 2.0 * rng.normal(size=n))
    conditions = np.stack([momentum, category], axis=1).astype(np.float32)
    return conditions, x[:, None].astype(np.float32)


def _draw(head, momentum, category, n=40_000, seed=1):
    raw = np.random.default_rng(seed).standard_normal((n, head.n_features)).astype(np.float32)
    conditions = np.tile([[momentum, category]], (n, 1)).astype(np.float32)
    return np.asarray(head([raw, conditions]))


def test_weighted_quantiles_with_unit_weights_are_the_midpoint_quantiles():
    values = np.random.default_rng(3).exponential(size=501)
    levels = np.linspace(0.0, 1.0, 37)
    np.testing.assert_allclose(weighted_quantiles(values, np.ones_like(values), levels),
                               np.quantile(values, levels, method="hazen"), rtol=1e-12)
    # each value sits at the middle of its weight's share of the CDF: 0 at 1/8, 1 at 5/8
    np.testing.assert_allclose(weighted_quantiles(np.array([1.0, 0.0]), np.array([3.0, 1.0]),
                                                  [0.0, 0.125, 0.375, 0.625, 1.0]),
                               [0.0, 0.0, 0.5, 1.0, 1.0])


def test_the_drawn_distribution_follows_the_conditions():
    conditions, samples = _peak_moving_with_momentum()
    head = GridQuantileHead(1, grid=[LOG_P], category_index=1, n_categories=2)
    head.adapt(samples, conditions)
    plain = QuantileHead(1, category_index=1, n_categories=2).adapt(samples, conditions)
    assert head.fallback_nodes == 0
    for momentum in (3.0, 10.0, 40.0):
        for category, (mean, width) in enumerate([(2.0 * np.log(momentum), 1.0),
                                                  (-np.log(momentum), 2.0)]):
            drawn = _draw(head, momentum, category)
            # the tent-weighted tables are a little wider than the law at one P (next test)
            assert drawn.mean() == pytest.approx(mean, abs=0.1)
            assert drawn.std() == pytest.approx(width, rel=0.15)
            # one table per category knows nothing of P (right only near the middle, P = 10)
            if momentum != 10.0:
                assert abs(_draw(plain, momentum, category).mean() - mean) > 1.0


def test_a_kernel_width_per_axis():
    conditions, samples = _peak_moving_with_momentum(n=40_000)
    flat = np.random.default_rng(5).uniform(0.0, 1.0, (len(samples), 1)).astype(np.float32)
    conditions = np.concatenate([conditions, flat], axis=1)          # P, category, a flat axis
    grid = [LOG_P, (2, [0.0, 0.5, 1.0], False)]

    def fitted(width):
        return GridQuantileHead(1, grid=grid, category_index=1, n_categories=2,
                                kernel_width=width).adapt(samples, conditions)

    same, scalar = fitted([0.5, 0.5]), fitted(0.5)
    np.testing.assert_array_equal(np.asarray(same.grid_tables), np.asarray(scalar.grid_tables))
    wide_on_flat = fitted([0.5, 1.0])
    assert wide_on_flat.get_config()["kernel_width"] == [0.5, 1.0]
    assert not np.allclose(np.asarray(wide_on_flat.grid_tables), np.asarray(same.grid_tables))
    # the axis the law does not depend on may be wide: the law at a P node is still right
    raw = np.random.default_rng(1).standard_normal((40_000, 1)).astype(np.float32)
    at_node = np.tile([[10.0, 0.0, 0.3]], (40_000, 1)).astype(np.float32)
    drawn = np.asarray(wide_on_flat([raw, at_node]))
    assert drawn.mean() == pytest.approx(2.0 * np.log(10.0), abs=0.1)
    assert drawn.std() == pytest.approx(1.0, rel=0.15)
    for bad in ([0.5, 0.5, 0.5], [0.5, 1.5], 0.0):
        with pytest.raises(ValueError, match="kernel_width"):
            GridQuantileHead(1, grid=grid, kernel_width=bad)


def test_at_a_node_the_map_is_that_nodes_table():
    conditions, samples = _peak_moving_with_momentum()
    head = GridQuantileHead(1, grid=[LOG_P], n_levels=11).adapt(samples, conditions)
    tables = np.asarray(head.grid_tables).reshape(9, 11)
    levels = np.linspace(0.0, 1.0, 11)[1:-1]
    raw = np.sqrt(2.0) * erfinv(2 * levels - 1)
    node = 4                                              # P = 10 on a log grid 1..100
    out = head([raw[:, None].astype(np.float32),
                np.tile([[10.0, 0.0]], (len(raw), 1)).astype(np.float32)])
    np.testing.assert_allclose(np.asarray(out)[:, 0], tables[node, 1:-1], rtol=1e-4, atol=1e-4)
    # the table is the tent-weighted quantile function of the rows around the node
    position = np.log(conditions[:, 0]) / np.log(100.0) * 8
    weight = np.maximum(0.0, 1.0 - np.abs(position - node))
    near = weight > 0
    np.testing.assert_allclose(
        tables[node], weighted_quantiles(samples[near, 0].astype(np.float64), weight[near],
                                         np.linspace(0, 1, 11)), rtol=1e-5, atol=1e-5)


def test_every_node_table_is_the_tent_weighted_quantile_function_of_all_rows():
    """The fit visits only each row's cell corners; every node, in three axes with a
    single-node axis, per-axis widths, NaN entries, ties and a min_weight at the edge of
    the populated region, must hold what a weighting of every row gives."""
    rng = np.random.default_rng(3)
    n = 30_000
    conditions = np.stack([np.exp(rng.uniform(0.0, np.log(100.0), n)), rng.uniform(0, 4, n),
                           np.full(n, 7.0), rng.integers(0, 2, n)], 1).astype(np.float32)
    samples = np.round(rng.normal(size=(n, 2)) * conditions[:, 1:2], 1)
    samples[rng.random((n, 2)) < 0.2] = np.nan
    grid = [LOG_P, (1, [0.0, 1.0, 2.5, 4.0, 6.0], False), (2, [7.0], False)]
    widths = [0.7, 1.0, 1.0]
    head = GridQuantileHead(2, grid=grid, n_levels=11, min_weight=120.0, kernel_width=widths,
                            category_index=3, n_categories=2).adapt(samples, conditions)
    tables = np.asarray(head.grid_tables).reshape(2, 9, 5, 1, 11, 2)
    position = np.stack([np.log(conditions[:, 0]) / np.log(100.0) * 8,
                         np.interp(conditions[:, 1], [0.0, 1.0, 2.5, 4.0, 6.0], np.arange(5))], 1)
    checked = 0
    for k, i, j, f in np.ndindex(2, 9, 5, 2):
        weight = (np.maximum(0.0, 1.0 - np.abs(position[:, 0] - i) / widths[0])
                  * np.maximum(0.0, 1.0 - np.abs(position[:, 1] - j) / widths[1]))
        usable = (weight > 0) & (conditions[:, 3] == k) & ~np.isnan(samples[:, f])
        if weight[usable].sum() < 120.0:
            continue
        checked += 1
        np.testing.assert_allclose(tables[k, i, j, 0, :, f], weighted_quantiles(
            samples[usable, f], weight[usable], np.linspace(0, 1, 11)), rtol=1e-6, atol=1e-5)
    assert 40 < checked < 2 * 9 * 4 * 2     # the eta nodes at 6 and some corners stay empty


def test_a_point_mass_stays_exact_between_nodes():
    conditions, samples = _peak_moving_with_momentum()
    zero = np.random.default_rng(5).random(len(samples)) < 0.3
    samples = np.where(zero[:, None], 0.0, np.abs(samples) + 1.0).astype(np.float32)
    head = GridQuantileHead(1, grid=[LOG_P]).adapt(samples, conditions)
    drawn = _draw(head, 7.0, 0)                           # between two nodes
    assert (drawn == 0.0).mean() == pytest.approx(0.3, abs=0.02)
    # only the level interval that holds the jump (1 of 100) interpolates across it
    assert ((drawn > 0.0) & (drawn < 0.99)).mean() < 0.015


def test_an_empty_corner_takes_the_nearest_filled_nodes_table():
    conditions, samples = _peak_moving_with_momentum(20_000)
    keep = ~((conditions[:, 1] == 1) & (conditions[:, 0] > 30.0))
    head = GridQuantileHead(1, grid=[LOG_P], category_index=1, n_categories=2)
    head.adapt(samples[keep], conditions[keep])
    assert head.fallback_nodes == 2                       # P = 56 and 100, category 1
    tables = np.asarray(head.grid_tables).reshape(2, 9, 101)
    np.testing.assert_array_equal(tables[1, 7], tables[1, 6])      # P = 32: the last filled
    np.testing.assert_array_equal(tables[1, 8], tables[1, 6])
    assert tables[0, 8, 50] > tables[0, 6, 50] + 1.0                # category 0: its own


def test_a_category_with_too_few_samples_takes_its_overall_table():
    conditions, samples = _peak_moving_with_momentum(20_000)
    keep = (conditions[:, 1] == 0) | (np.arange(len(conditions)) < 300)   # ~150 of category 1
    head = GridQuantileHead(1, grid=[LOG_P], category_index=1, n_categories=2)
    head.adapt(samples[keep], conditions[keep])
    assert head.fallback_nodes == 9
    tables = np.asarray(head.grid_tables).reshape(2, 9, 101)
    category_table = np.asarray(head.category_quantiles[1].quantiles)[:, 0]
    for node in range(9):
        np.testing.assert_allclose(tables[1, node], np.interp(
            np.linspace(0, 1, 101), np.linspace(0, 1, 1000), category_table), rtol=1e-6)


def test_ring_ties_on_grid_tables_save_and_reload(tmp_path):
    rng = np.random.default_rng(0)
    n = 20_000
    conditions = np.stack([np.exp(rng.uniform(np.log(2.0), np.log(150.0), n)),
                           rng.uniform(1.8, 4.4, n), rng.uniform(0, 800, n),
                           rng.integers(0, 5, n).astype(float)], axis=1).astype(np.float32)
    head = GridRingTiesHead(5, **RICH, category_index=3, n_categories=5,
                            grid=[(0, [2.0, 9.3, 17.7, 150.0], True), (1, [1.8, 3.0, 5.5], False),
                                  (2, [0.0, 800.0], False)], min_weight=50.0)
    samples = np.asarray(head.constrain(rng.normal(5.0, 1.0, (n, 5)).astype(np.float32),
                                        conditions))
    head.adapt(samples, conditions)
    tables = np.asarray(head.grid_tables).reshape(5, 24, 101, 5)
    assert tables[..., 4].min() > 0.5                     # the imposed zeros left out
    raw_in = keras.Input((5,))
    conditions_in = keras.Input((4,))
    model = keras.Model([raw_in, conditions_in], head([raw_in, conditions_in]))
    raw = rng.standard_normal((1000, 5)).astype(np.float32)
    drawn = np.asarray(model([raw, conditions[:1000]]))
    np.testing.assert_array_equal(np.asarray(head.constrain(drawn, conditions[:1000])), drawn)
    model.save(tmp_path / "head.keras")
    reloaded = keras.saving.load_model(tmp_path / "head.keras")
    np.testing.assert_array_equal(np.asarray(reloaded([raw, conditions[:1000]])), drawn)
    if importlib.util.find_spec("jax") is None:
        return
    np.savez(tmp_path / "inputs.npz", raw=raw, conditions=conditions[:1000])
    (tmp_path / "run.py").write_text(textwrap.dedent("""
        import sys
        import numpy as np
        import keras
        import ddsim_gan.models  # registers the layers
        assert keras.backend.backend() == "jax"
        model = keras.saving.load_model(sys.argv[1])
        data = np.load(sys.argv[2])
        np.save(sys.argv[3], np.asarray(model([data["raw"], data["conditions"]])))
    """))
    completed = subprocess.run(
        [sys.executable, str(tmp_path / "run.py"), str(tmp_path / "head.keras"),
         str(tmp_path / "inputs.npz"), str(tmp_path / "out.npy")],
        env={**os.environ, "KERAS_BACKEND": "jax"}, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-3000:]
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), drawn, rtol=1e-5, atol=1e-5)


def test_a_grid_axis_needs_a_usable_range():
    with pytest.raises(ValueError, match="at least one grid axis"):
        GridQuantileHead(1)
    with pytest.raises(ValueError, match="must increase"):
        GridQuantileHead(1, grid=[(0, [0.0, 10.0], True)])
    with pytest.raises(ValueError, match="must increase"):
        GridQuantileHead(1, grid=[(0, [1.0, 3.0, 2.0], False)])
    with pytest.raises(ValueError, match="needs the conditions"):
        GridQuantileHead(1, grid=[LOG_P]).adapt(np.zeros((10, 1)))


def test_the_rich_grid_has_nodes_at_every_threshold_and_edge():
    from ddsim_gan import detectors

    rich = recipe_module("lhcb_rich_gan")
    detector = detectors.get("lhcb_rich")
    (p_column, momentum, p_log), (eta_column, eta, _), _ = rich.quantile_grid(detector)
    assert (p_column, eta_column, p_log) == (0, 1, True)
    ties = rich.ring_ties(detector)
    thresholds = [t for _, ts in ties["hypotheses"] for t in ts] + ties["pion_thresholds"]
    inside = [t for t in thresholds if 2.0 < t < 150.0]
    assert len(inside) == 7     # pi, K, p in both radiators, mu in CF4 (its C4F10 one: 1.996)
    for threshold in inside:
        assert np.min(np.abs(np.array(momentum) - threshold)) < 1e-9
    assert (momentum[0], momentum[-1]) == pytest.approx((2.0, 150.0))
    assert np.max(np.diff(np.log(momentum))) <= np.log(1.5) + 1e-9
    for low, high in ties["acceptance"]:         # where the acceptances are exactly zero
        assert np.min(np.abs(np.array(eta) - low)) < 1e-6 or low <= 1.8
        assert np.min(np.abs(np.array(eta) - high)) < 1e-6
    assert np.max(np.diff(eta)) <= 0.5 + 1e-9
    (_, map_momentum, _), *map_others = rich.quantile_map_grid(detector)
    assert set(momentum) <= set(map_momentum) and map_others == rich.quantile_grid(detector)[1:]
    assert np.max(np.diff(np.log(map_momentum))) <= np.log(rich.QUANTILE_MAP_P_STEP) + 1e-9


def _narrow_peak_moving_with_momentum(n=200_000, seed=0):
    """x ~ N(2 log P, 0.3): over one node spacing of LOG_P the mean moves by 1.15, four widths,
    so a tent-weighted node table is about twice as wide as the law at its node."""
    rng = np.random.default_rng(seed)
    momentum = np.exp(rng.uniform(0.0, np.log(100.0), n))
    x = 2.0 * np.log(momentum) + 0.3 * rng.normal(size=n)
    return momentum[:, None].astype(np.float32), x[:, None].astype(np.float32)


def _draw_at(head, momentum, n=40_000, seed=1):
    raw = np.random.default_rng(seed).standard_normal((n, 1)).astype(np.float32)
    return np.asarray(head([raw, np.full((n, 1), momentum, np.float32)]))[:, 0]


def test_refinement_stages_remove_the_widening_of_the_node_tables():
    conditions, samples = _narrow_peak_moving_with_momentum()
    one_stage = GridQuantileHead(1, grid=[LOG_P]).adapt(samples, conditions)
    refined = GridQuantileHead(1, grid=[LOG_P], refinements=2).adapt(samples, conditions)
    assert refined.fallback_nodes == one_stage.fallback_nodes == 0
    tables = np.asarray(refined.grid_tables).reshape(3, 9, 101)
    np.testing.assert_array_equal(tables[0], np.asarray(one_stage.grid_tables).reshape(9, 101))
    for momentum in (10.0, 7.0, 30.0):                    # at a node and between nodes
        wide, drawn = _draw_at(one_stage, momentum), _draw_at(refined, momentum)
        assert wide.std() > 0.45
        assert drawn.std() == pytest.approx(0.3, rel=0.12)
        assert drawn.mean() == pytest.approx(2.0 * np.log(momentum), abs=0.05)
    # the first refinement narrows: its input, the PIT through stage 0 in Gaussian units, is
    # narrower than N(0, 1), whose 10-90 % range is 2.56
    assert np.ptp(tables[1, 4, 10:91]) < 0.8 * 2.56


def test_a_refinement_of_right_tables_is_close_to_the_identity():
    rng = np.random.default_rng(4)
    momentum = np.exp(rng.uniform(0.0, np.log(100.0), 200_000))[:, None].astype(np.float32)
    samples = rng.gamma(2.0, size=momentum.shape).astype(np.float32)   # no dependence on P
    head = GridQuantileHead(1, grid=[LOG_P], refinements=1).adapt(samples, momentum)
    levels = np.linspace(0.0, 1.0, 101)[5:96]
    gaussian = np.sqrt(2.0) * erfinv(2 * levels - 1)
    refinement = np.asarray(head.grid_tables).reshape(2, 9, 101)[1][:, 5:96]
    np.testing.assert_allclose(refinement, np.broadcast_to(gaussian, refinement.shape), atol=0.08)


def test_refined_tables_keep_a_point_mass_exact_and_save_with_their_stages(tmp_path):
    conditions, samples = _peak_moving_with_momentum()
    zero = np.random.default_rng(5).random(len(samples)) < 0.3
    samples = np.where(zero[:, None], 0.0, np.abs(samples) + 1.0).astype(np.float32)
    head = GridQuantileHead(1, grid=[LOG_P], category_index=1, n_categories=2, refinements=2)
    head.adapt(samples, conditions)
    drawn = _draw(head, 7.0, 0)
    assert (drawn == 0.0).mean() == pytest.approx(0.3, abs=0.02)
    raw_in, conditions_in = keras.Input((1,)), keras.Input((2,))
    model = keras.Model([raw_in, conditions_in], head([raw_in, conditions_in]))
    model.save(tmp_path / "head.keras")
    reloaded = keras.saving.load_model(tmp_path / "head.keras")
    assert reloaded.layers[-1].refinements == 2
    raw = np.random.default_rng(1).standard_normal((1000, 1)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(reloaded([raw, conditions[:1000]])),
                                  np.asarray(model([raw, conditions[:1000]])))
    with pytest.raises(ValueError, match="refinements = -1"):
        GridQuantileHead(1, grid=[LOG_P], refinements=-1)
