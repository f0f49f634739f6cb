"""Split learning (seed 004): the region transform and head, and the region mixture model."""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from ddsim_gan import detectors
from ddsim_gan.models.regions import (RadialQuantileTransform, RegionHead, RegionMixture,
                                      RegionSplit, build_region_gan, region_fractions)

TINY = dict(latent_dim=4, generator_hidden=(16,), critic_hidden=(16,), n_quantiles=200)


@pytest.fixture(scope="module")
def luxe():
    detector = detectors.get("luxe_dump")
    conditions, samples = detector.simulate(6000, seed=0)
    return detector, conditions, samples, detector.region_of(samples)


@pytest.fixture(scope="module")
def split(luxe):
    detector, conditions, samples, regions = luxe
    radius = detector.INNER_RADIUS_MM
    gans = [build_region_gan(detector, conditions[regions == k], samples[regions == k],
                             r_min=r_min, r_max=r_max, seed=k, name=f"luxe_{name}", **TINY)
            for k, (name, r_min, r_max) in enumerate((("inner", 0.0, radius),
                                                      ("outer", radius, None)))]
    fractions = region_fractions(conditions, regions, 2, 0, 4)
    return RegionSplit(gans, fractions, category_index=0, names=("inner", "outer"))


def test_transform_appends_r_and_inverts(luxe):
    _, _, samples, _ = luxe
    transform = RadialQuantileTransform(6, n_quantiles=500).adapt(samples)
    normalized = keras.ops.convert_to_numpy(transform(samples[:500]))
    assert normalized.shape == (500, 7)
    # the r column is the Gaussianized radius computed from x and y
    r = np.hypot(samples[:500, 0], samples[:500, 1])
    expected = keras.ops.convert_to_numpy(transform.quantiles(
        np.concatenate([samples[:500], r[:, None]], axis=1).astype("float32")))[:, 6]
    np.testing.assert_allclose(normalized[:, 6], expected, atol=1e-4)
    # inverse drops r; a 6-wide input is read as the generated columns
    for width in (7, 6):
        back = keras.ops.convert_to_numpy(transform(normalized[:, :width], inverse=True))
        assert back.shape == (500, 6)
        np.testing.assert_allclose(back[:, 2], samples[:500, 2], rtol=1e-3, atol=1e-3)


def test_head_keeps_particles_in_their_annulus(luxe):
    _, _, samples, _ = luxe
    raw = np.random.default_rng(1).normal(0, 2, (4000, 6)).astype("float32")
    for r_min, r_max in ((0.0, 100.0), (100.0, None), (50.0, 300.0)):
        head = RegionHead(6, r_min=r_min, r_max=r_max, n_quantiles=500).adapt(samples)
        out = keras.ops.convert_to_numpy(head([raw, np.zeros((4000, 1), "float32")]))
        r = np.hypot(out[:, 0].astype(float), out[:, 1].astype(float))
        assert (r >= r_min).all() and (r_max is None or (r < r_max).all())
        # well inside the annulus the head is the plain inverse quantile transform
        plain = keras.ops.convert_to_numpy(head.quantiles(raw, inverse=True))
        inside = (np.hypot(plain[:, 0], plain[:, 1]) > 1.2 * r_min) & (
            np.hypot(plain[:, 0], plain[:, 1]) < 0.8 * (r_max or np.inf))
        np.testing.assert_allclose(out[inside], plain[inside], rtol=1e-5)
    with pytest.raises(ValueError, match="must exceed"):
        RegionHead(6, r_min=100.0, r_max=50.0)


def test_head_with_a_table_per_species(luxe, tmp_path):
    """One inverse CDF per species: N(0, 1) numbers give each species its own momentum
    distribution; the head saves and reloads with its tables; a species absent from the
    training samples takes the table of all."""
    from scipy.stats import ks_2samp

    _, conditions, samples, _ = luxe
    species = np.rint(conditions[:, 0])
    keep = species != 2                                      # no positrons in these samples
    head = RegionHead(6, r_min=0.0, r_max=None, n_quantiles=500, category_index=0,
                      n_categories=4).adapt(samples[keep], conditions[keep])
    n = 4000
    raw = np.random.default_rng(2).standard_normal((4 * n, 6)).astype("float32")
    asked = np.repeat(np.arange(4.0), n)[:, None].astype("float32")
    out = keras.ops.convert_to_numpy(head([raw, asked]))
    for k in (0, 1, 3):
        assert ks_2samp(out[k * n:(k + 1) * n, 2], samples[species == k, 2]).statistic < 0.05
    # photons and neutrons differ by decades in p: one table for all could not give both
    assert np.median(out[3 * n:, 2]) != pytest.approx(np.median(out[:n, 2]), rel=0.5)
    everyone = keras.ops.convert_to_numpy(head.quantiles(raw[2 * n:3 * n], inverse=True))
    np.testing.assert_allclose(out[2 * n:3 * n], everyone, rtol=1e-5)

    inputs = [keras.Input((6,)), keras.Input((1,))]
    model = keras.Model(inputs, head(inputs))
    model.save(tmp_path / "head.keras")
    again = keras.saving.load_model(tmp_path / "head.keras")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(again.predict([raw, asked], verbose=0)),
                               out, rtol=1e-3, atol=1e-4)  # float32, steep tails
    with pytest.raises(ValueError, match="needs the conditions"):
        RegionHead(6, category_index=0, n_categories=4).adapt(samples)


def test_mixture_fractions_regions_and_reproducibility(luxe, split):
    detector, _, _, _ = luxe
    conditions = detector.sample_conditions(30_000, seed=5)
    samples = split.generate(conditions, seed=3)
    assert samples.shape == (30_000, 6) and np.isfinite(samples).all()
    inner = detector.region_of(samples) == 0
    species = conditions[:, 0].astype(int)
    for s in range(4):
        n = (species == s).sum()
        tolerance = 4 * np.sqrt(0.25 / n) + 1e-3
        assert inner[species == s].mean() == pytest.approx(split.fractions[s, 0], abs=tolerance)
    np.testing.assert_array_equal(split.generate(conditions, seed=3), samples)
    assert not np.array_equal(split.generate(conditions, seed=4), samples)
    # one generated particle per noise row: the last noise column picks the region
    noise = np.zeros((2, split.latent_dim), "float32")
    noise[:, -1] = [-8.0, 8.0]                       # u ~ 0: inner; u ~ 1: outer
    pair = keras.ops.convert_to_numpy(split.sampler([np.zeros((2, 1), "float32"), noise]))
    assert detector.region_of(pair).tolist() == [0, 1]


def test_mixture_layer_by_hand():
    layer = RegionMixture([[0.25, 0.75], [1.0, 0.0]], category_index=0)
    conditions = np.array([[0.0], [0.0], [1.0], [1.0]], "float32")
    # u = Phi(noise): 0.16 (< 0.25: region 0) and 0.84 (region 1) for category 0
    noise = np.array([[-1.0], [1.0], [1.0], [3.0]], "float32")
    a, b = np.zeros((4, 2), "float32"), np.ones((4, 2), "float32")
    out = keras.ops.convert_to_numpy(layer([conditions, noise, a, b]))
    assert out[:, 0].tolist() == [0.0, 1.0, 0.0, 0.0]  # category 1 is always region 0
    with pytest.raises(ValueError, match="no region"):
        RegionMixture([[0.0, 0.0]])


def test_keras_round_trip_and_region_files(luxe, split, tmp_path):
    detector, conditions, _, _ = luxe
    directory = split.save(tmp_path / "split")
    info = json.loads((directory / "regions.json").read_text())
    assert info["names"] == ["inner", "outer"] and len(info["fractions"]) == 4
    loaded = keras.saving.load_model(directory / "generator.keras")
    noise = np.random.default_rng(0).standard_normal((500, split.latent_dim)).astype("float32")
    expected = keras.ops.convert_to_numpy(split.sampler([conditions[:500], noise]))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded([conditions[:500], noise])),
                               expected, rtol=1e-5, atol=1e-4)
    again = RegionSplit.load(directory)
    np.testing.assert_array_equal(again.generate(conditions[:500], seed=1),
                                  split.generate(conditions[:500], seed=1))
    with pytest.raises(FileNotFoundError, match="regions.json"):
        RegionSplit.load(tmp_path)


JAX_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    import keras
    import ddsim_gan.models  # registers the layers
    assert keras.backend.backend() == "jax"
    model = keras.saving.load_model(sys.argv[1])
    data = np.load(sys.argv[2])
    out = np.asarray(model([data["conditions"], data["noise"]]))
    np.save(sys.argv[3], out)
""")


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
def test_mixture_runs_under_jax(luxe, split, tmp_path):
    _, conditions, _, _ = luxe
    split.sampler.save(tmp_path / "generator.keras")
    noise = np.random.default_rng(0).standard_normal((300, split.latent_dim)).astype("float32")
    np.savez(tmp_path / "inputs.npz", conditions=conditions[:300], noise=noise)
    (tmp_path / "run.py").write_text(JAX_SCRIPT)
    completed = subprocess.run(
        [sys.executable, str(tmp_path / "run.py"), str(tmp_path / "generator.keras"),
         str(tmp_path / "inputs.npz"), str(tmp_path / "out.npy")],
        env={**os.environ, "KERAS_BACKEND": "jax"}, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-3000:]
    expected = keras.ops.convert_to_numpy(split.sampler([conditions[:300], noise]))
    # rtol 1e-3: where the inverse quantile transform is steep (the slow tail of t) it magnifies
    # float32 rounding that differs between backends and thread counts (observed: 0.11 ns at
    # t = 524 ns, a relative 2e-4, under pytest-xdist; 2e-6 elsewhere).
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, rtol=1e-3, atol=1e-3)
