"""Per-layer sharpness of the SiW generator's cells (SharpenedCellNoise): what it computes, how it
is started from the data, and that a generator with it starts MIP tracks in one cell per layer,
saves, and runs under JAX."""

import importlib.util
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from ddsim_gan.models.cell_noise import (CONTROL_BOUND, INITIAL_CELL_SIGMA, CellNoise,
                                         SharpenedCellNoise, fit_layer_sharpness,
                                         readout_top_share)
from test_models_calorimeter import TinyLayered

SHAPE = (3, 8, 8)
CELLS = 3 * 64


def _inputs(n=5, seed=0):
    rng = np.random.default_rng(seed)
    head = rng.normal(0.0, 2.0, (n, CELLS + 1)).astype("float32")
    noise = rng.standard_normal((n, CELLS)).astype("float32")
    return head, noise


def _layer_softmax(logits):
    per_layer = logits.reshape(len(logits), SHAPE[0], -1)
    shares = np.exp(per_layer - per_layer.max(axis=-1, keepdims=True))
    return shares / shares.sum(axis=-1, keepdims=True)


def _logsumexp(logits):
    per_layer = logits.reshape(len(logits), SHAPE[0], -1)
    top = per_layer.max(axis=-1)
    return top + np.log(np.exp(per_layer - top[..., None]).sum(axis=-1))


def test_zero_controls_are_the_plain_cell_noise():
    head, noise = _inputs()
    plain = np.asarray(CellNoise()([head, noise]))
    sharpened = np.asarray(SharpenedCellNoise(SHAPE)([head, noise,
                                                      np.zeros((5, 6), "float32")]))
    np.testing.assert_allclose(sharpened, plain, rtol=1e-5, atol=1e-5)


def test_each_layer_keeps_its_energy_share_and_sharpens_or_flattens_within():
    head, noise = _inputs()
    controls = np.zeros((5, 6), "float32")
    controls[:, 1] = 1.5                        # layer 1: beta = e^1.5 (sharper)
    controls[:, 2] = -1.0                       # layer 2: beta = e^-1 (flatter)
    controls[:, 3] = 0.7                        # layer 0: noise gain e^0.7
    layer = SharpenedCellNoise(SHAPE)
    out = np.asarray(layer([head, noise, controls]))
    assert out.shape == head.shape
    np.testing.assert_array_equal(out[:, -1], head[:, -1])          # the response untouched
    sigma, bounded = INITIAL_CELL_SIGMA, CONTROL_BOUND * np.tanh(controls / CONTROL_BOUND)
    gain = np.exp(bounded[:, 3:6])[:, :, None]
    noisy = (head[:, :CELLS].reshape(5, 3, -1) + gain * sigma * noise.reshape(5, 3, -1))
    # the layer's share of the event's energy: logsumexp of its noisy logits, unchanged
    np.testing.assert_allclose(_logsumexp(out[:, :CELLS]), _logsumexp(noisy), rtol=1e-5)
    before, after = _layer_softmax(noisy.reshape(5, -1)), _layer_softmax(out[:, :CELLS])
    np.testing.assert_allclose(after[:, 0], before[:, 0], rtol=1e-4, atol=1e-7)
    beta = np.exp(bounded[0, 1])
    expected = before[:, 1] ** beta / (before[:, 1] ** beta).sum(axis=-1, keepdims=True)
    np.testing.assert_allclose(after[:, 1], expected, rtol=1e-3, atol=1e-7)
    assert (after[:, 1].max(axis=-1) > before[:, 1].max(axis=-1)).all()
    assert (after[:, 2].max(axis=-1) < before[:, 2].max(axis=-1)).all()
    # controls are bounded: a huge control is beta = g = e^CONTROL_BOUND, not an overflow
    huge = np.asarray(layer([head, noise, np.full((5, 6), 1e4, "float32")]))
    at_bound = np.asarray(layer([head, noise, np.full((5, 6), 10 * CONTROL_BOUND, "float32")]))
    assert np.isfinite(huge).all()
    np.testing.assert_allclose(huge, at_bound, rtol=1e-5, atol=1e-5)


def test_fit_finds_sharp_tracks_and_leaves_spread_showers_alone():
    """Reference tracks: 1.1 MIP in one cell drawn from a 2 x 2 beam spot; showers: 40 MIP
    spread as their mean profile. The tracks' fit sharpens (one cell read out, as in the
    reference), the showers' stays at beta = 1 (no change)."""
    rng = np.random.default_rng(0)
    n, per_layer = 200, 64
    profile = np.full((8, 8), 1e-4)
    profile[3:5, 3:5] = 1.0
    profile /= profile.sum()
    tracks = np.zeros((n, 1, per_layer))
    tracks[np.arange(n), 0, rng.choice(per_layer, n, p=profile.ravel())] = 1.1
    wide = np.full((8, 8), 0.02)
    wide[2:6, 2:6] = 1.0
    wide /= wide.sum()
    showers = np.repeat(40.0 * wide.reshape(1, 1, -1), n, axis=0)
    showers = np.where(showers >= 0.5, showers, 0.0)
    log_beta, log_gain = {}, {}
    for name, cells, mean in (("tracks", tracks, profile), ("showers", showers, wide)):
        log_beta[name], log_gain[name] = fit_layer_sharpness(
            np.log(mean.reshape(1, -1)), cells.sum(axis=2), cells, threshold=0.5,
            noise_sigma=np.array([0.06]), rng=np.random.default_rng(1))
    assert log_beta["tracks"][0] >= np.log(3.0) and log_gain["tracks"][0] > 0.5
    assert log_beta["showers"][0] == 0.0 and log_gain["showers"][0] == 0.0
    hit, share = readout_top_share(tracks[:, 0], 0.5)
    assert hit.all() and np.allclose(share, 1.0)


def _with_tracks(detector, n):
    """``n`` TinyLayered events, half the pions replaced by MIP tracks: 1 MIP in one of the
    3 x 3 central cells of every layer, the cell drawn per event."""
    conditions, samples = detector.simulate(n, seed=0)
    rng = np.random.default_rng(2)
    pions = np.flatnonzero(conditions[:, 1] == 1)
    tracks = pions[: len(pions) // 2]
    samples[tracks] = 0.0
    spot = rng.integers(3, 6, (len(tracks), 2))
    samples[tracks[:, None], np.arange(3)[None, :], spot[:, :1], spot[:, 1:]] = 1.0
    return conditions, samples, tracks


@pytest.fixture(scope="module")
def track_start():
    """TinyLayered, half its pions MIP tracks (1 MIP in one of the 3 x 3 central cells of every
    layer, the cell drawn per event); the untrained generators without and with sharpness."""
    from ddsim_gan.models.calorimeter import build_calorimeter_gan

    detector = TinyLayered()
    conditions, samples, tracks = _with_tracks(detector, 1200)
    gans = {}
    for sharp in (False, True):
        keras.utils.set_random_seed(4)
        gans[sharp] = build_calorimeter_gan(
            detector, conditions, samples, energy_condition="E_beam", generator_hidden=(8, 8),
            critic_hidden=(8,), discrete_latent=2,
            layer_sharpness="learned" if sharp else "none",
            readout_noise=np.full((3, 1, 1), 0.06))
    return conditions, tracks, gans


def test_sharpness_starts_tracks_in_one_cell_per_layer(track_start):
    conditions, tracks, gans = track_start
    occupancy = {}
    for sharp, gan in gans.items():
        generated = gan.generate(conditions, seed=1)
        pions = conditions[:, 1] == 1
        totals = generated.reshape(len(generated), -1).sum(axis=1)
        low = pions & (totals < 10.0)                     # the tracks' code
        assert 0.35 < low.sum() / pions.sum() < 0.65
        occupancy[sharp] = (generated[low].max(axis=(2, 3)) > 0).mean()
    # without: the 1 MIP shared over the spot's cells, often all under the 0.5 MIP cut
    assert occupancy[False] < 0.8 and occupancy[True] > 0.95, occupancy


@pytest.mark.slow
def test_sharpened_generator_saves_and_runs_under_jax(track_start, tmp_path):
    from ddsim_gan.models import load_generator

    conditions, _, gans = track_start
    gan = gans[True]
    path = tmp_path / "generator.keras"
    gan.sampler.save(path)
    noise = np.random.default_rng(0).standard_normal((6, gan.latent_dim)).astype("float32")
    expected = np.asarray(gan.sampler.predict([conditions[:6], noise], verbose=0))
    np.testing.assert_allclose(load_generator(path).predict([conditions[:6], noise], verbose=0),
                               expected, rtol=1e-5, atol=1e-5)
    if importlib.util.find_spec("jax") is None:
        pytest.skip("jax is not installed")
    np.savez(tmp_path / "inputs.npz", conditions=conditions[:6], noise=noise)
    script = textwrap.dedent("""
        import sys
        import numpy as np
        import keras
        import ddsim_gan.models  # registers the custom layers
        assert keras.backend.backend() == "jax", keras.backend.backend()
        inputs = np.load(sys.argv[1])
        model = keras.saving.load_model(sys.argv[2])
        np.save(sys.argv[3], np.asarray(model([inputs["conditions"], inputs["noise"]])))
    """)
    completed = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "inputs.npz"), str(path),
         str(tmp_path / "out.npy")],
        env={**os.environ, "KERAS_BACKEND": "jax"}, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-3000:]
    # cells at the readout threshold may fall either side under another backend's rounding
    jax_out = np.load(tmp_path / "out.npy")
    close = np.isclose(jax_out, expected, rtol=1e-4, atol=1e-4)
    assert close.mean() > 0.999, close.mean()


def test_layer_sharpness_needs_cell_noise():
    from ddsim_gan.models.calorimeter import cell_generator

    with pytest.raises(ValueError, match="needs cell_noise"):
        cell_generator(4, 3, SHAPE, hidden=(8,), cell_noise=False, layer_sharpness=True)


def test_data_mode_holds_the_sharpness_while_the_rest_trains():
    import tensorflow as tf

    from ddsim_gan.models.calorimeter import build_calorimeter_gan

    detector = TinyLayered()
    conditions, samples, _ = _with_tracks(detector, 200)
    gan = build_calorimeter_gan(detector, conditions, samples, energy_condition="E_beam",
                                generator_hidden=(8, 8), critic_hidden=(8,), critic_steps=2,
                                discrete_latent=2, layer_sharpness="data",
                                readout_noise=np.full((3, 1, 1), 0.06))
    sharpness, output = (gan.generator.get_layer(n) for n in ("sharpness", "output_dense"))
    before = [np.asarray(w).copy() for w in (sharpness.kernel, output.kernel)]
    assert not sharpness.trainable and np.abs(before[0]).sum() > 0     # the tracks' fit
    gan.compile(jit_compile=False)
    data = tf.data.Dataset.from_tensor_slices((conditions, samples)).repeat().batch(
        32, drop_remainder=True)
    gan.fit(data, epochs=1, steps_per_epoch=2, verbose=0)
    np.testing.assert_array_equal(np.asarray(sharpness.kernel), before[0])
    assert not np.allclose(np.asarray(output.kernel), before[1])
    with pytest.raises(ValueError, match="layer_sharpness must be one of"):
        build_calorimeter_gan(detector, conditions, samples, energy_condition="E_beam",
                              generator_hidden=(8,), critic_hidden=(8,), layer_sharpness="on")
