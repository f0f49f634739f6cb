"""The parametric shower-components generator: rendering, fluctuations, gradients, saving."""

import math

import keras
import numpy as np
import pytest
from keras import ops

from ddsim_gan.models import components
from ddsim_gan.models.components import PARAMS_PER_LAYER, ShowerComponentsHead

from conftest import samples_under_jax

SHAPE = (6, 6, 3)                    # x, y, layer


def _head(**kwargs):
    options = dict(n_components=2, threshold=0.0, response_spread=0.1)
    options.update(kwargs)
    return ShowerComponentsHead(SHAPE, layer_axis=2, cell_size=(10.0, 10.0, 20.0), **options)


def _raw(head, n, params, seed=0):
    """Generator output: the same parameter vector for every event, then fresh normals."""
    rng = np.random.default_rng(seed)
    normals = rng.standard_normal((n, head.noise_units))
    return np.concatenate([np.tile(params, (n, 1)), normals], axis=1).astype(np.float32)


def _params(head, centre=(0.0, 0.0), log_core=math.log(0.2), log_tail=math.log(0.2),
            log_spot=0.0):
    per_layer = np.zeros((head.n_components, head.n_layers, PARAMS_PER_LAYER))
    per_layer[..., 1], per_layer[..., 2] = centre
    per_layer[..., 3], per_layer[..., 4], per_layer[..., 6] = log_core, log_tail, log_spot
    return np.concatenate([np.zeros(head.n_components), per_layer.ravel(), [0.0]])


def test_t2_shares_follow_the_marginal_cdf():
    edges = np.linspace(-50, 50, 11).astype(np.float32)
    shares = ops.convert_to_numpy(components._t2_cell_shares(
        np.float32([[3.0]]), np.float32([[7.0]]), edges))[0]
    u = (edges - 3.0) / 7.0
    cdf = 0.5 + 0.5 * u / np.sqrt(u * u + 1)
    np.testing.assert_allclose(shares, np.diff(cdf), rtol=1e-5, atol=1e-7)


def test_expected_energy_sits_where_the_parameters_put_it():
    head = _head(n_components=1)
    # centre at +1.5 cells in x (the middle of cell 4 of 6), -0.5 in y (cell 2): narrow profile
    params = _params(head, centre=(1.5, -0.5), log_core=math.log(0.01), log_tail=math.log(0.01))
    raw = _raw(head, 2, params)
    mu, spots, total = (ops.convert_to_numpy(t) for t in head.expected(raw, np.float32([[100.0]] * 2)))
    np.testing.assert_allclose(total, 100.0, rtol=1e-5)
    np.testing.assert_allclose(mu.sum(axis=(1, 2, 3)), 100.0, rtol=1e-3)
    per_cell = mu[0].sum(axis=0)                                  # [x, y]
    assert np.unravel_index(per_cell.argmax(), per_cell.shape) == (4, 2)
    assert per_cell.max() > 0.98 * 100.0


def test_without_readout_the_event_keeps_its_energy():
    head = _head()
    raw = _raw(head, 64, _params(head, log_core=math.log(0.5), log_tail=math.log(1.5)), seed=1)
    cells = ops.convert_to_numpy(head([raw, np.float32([[50.0]] * 64)]))
    assert cells.shape == (64,) + SHAPE
    assert (cells >= 0).all()
    np.testing.assert_allclose(cells.reshape(64, -1).sum(axis=1), 50.0, rtol=1e-4)


def test_cells_fire_with_the_poisson_probability():
    """With spots of one unit, a cell expecting mu units fires with probability 1 - exp(-mu)."""
    head = _head(n_components=1)
    n = 4000
    raw = _raw(head, n, _params(head, log_core=math.log(0.8), log_tail=math.log(0.8)), seed=2)
    conditions = np.float32([[20.0]] * n)
    mu, spots, _ = (ops.convert_to_numpy(t) for t in head.expected(raw, conditions))
    cells = ops.convert_to_numpy(head([raw, conditions]))
    fired = (np.moveaxis(cells, 3, 1) > 0).mean(axis=0)            # layer first, like mu
    expected = 1.0 - np.exp(-spots[0])
    np.testing.assert_allclose(fired, expected, atol=4 * np.sqrt(0.25 / n))


def test_readout_threshold_and_noise_hits():
    head = _head(threshold=1.0, noise_sigma=0.4, photostat=0.0)
    raw = _raw(head, 500, _params(head), seed=3)
    cells = ops.convert_to_numpy(head([raw, np.float32([[30.0]] * 500)]))
    positive = cells[cells > 0]
    assert positive.min() >= 1.0
    # a narrow shower with 0.4 noise: far cells fire on noise alone at the Gaussian tail rate
    far = cells[:, 0, 0, :]
    np.testing.assert_allclose((far > 0).mean(), 0.5 * math.erfc(1.0 / 0.4 / math.sqrt(2)),
                               atol=0.01)


def test_gradients_reach_the_spot_size_through_the_hit_count():
    head = _head(n_components=1, threshold=0.5)
    raw = keras.Variable(_raw(head, 32, _params(head, log_core=math.log(1.0),
                                                log_tail=math.log(1.0)), seed=4))
    import tensorflow as tf

    with tf.GradientTape() as tape:
        cells = head([raw, np.float32([[10.0]] * 32)])
        soft_hits = ops.sum(ops.sigmoid(10.0 * (cells - 0.5)))
    grad = ops.convert_to_numpy(tape.gradient(soft_hits, raw))
    spot_columns = [head.n_components + PARAMS_PER_LAYER * layer + 6
                    for layer in range(head.n_layers)]
    assert np.all(np.isfinite(grad))
    assert np.abs(grad[:, spot_columns]).sum() > 0


@pytest.mark.slow
def test_components_gan_saves_reloads_and_learns_the_shape(tmp_path):
    """With fragment slots, so their parameters and noise travel through saving too."""
    from ddsim_gan import detectors
    from ddsim_gan.data import dataset_from_arrays
    from ddsim_gan.models.builders import build_conditional_gan

    detector = detectors.get("darkshine")
    conditions, samples = detector.simulate(512, seed=5)
    gan = build_conditional_gan(detector, conditions, samples, energy_condition="E_total",
                                architecture="components", generator_hidden=(32,),
                                critic_hidden=(32,), latent_dim=8, critic_steps=2,
                                noise_sigma=0.25, photostat=0.05, seed=1,
                                fragments_per_layer=1)
    # the untrained generator starts at the mean longitudinal profile
    generated = gan.generate(conditions[:256], seed=2)
    ref_layers = samples.sum(axis=(1, 2)).mean(axis=0) / samples.sum(axis=(1, 2, 3)).mean()
    gen_layers = generated.sum(axis=(1, 2)).mean(axis=0) / generated.sum(axis=(1, 2, 3)).mean()
    np.testing.assert_allclose(gen_layers[:4], ref_layers[:4], atol=0.05)

    gan.compile(generator_optimizer=keras.optimizers.Adam(1e-4),
                critic_optimizer=keras.optimizers.Adam(1e-4))
    dataset = dataset_from_arrays(conditions, samples, batch_size=64, seed=0, repeat=True)
    history = gan.fit(dataset, epochs=1, steps_per_epoch=2, verbose=0).history
    assert np.isfinite(history["generator_loss"][-1])
    gan.sampler.save(tmp_path / "generator.keras")
    reloaded = keras.models.load_model(tmp_path / "generator.keras")
    noise = np.random.default_rng(0).standard_normal(
        (8, gan.latent_dim)).astype(np.float32)
    expected = ops.convert_to_numpy(gan.sampler([conditions[:8], noise]))
    np.testing.assert_allclose(ops.convert_to_numpy(reloaded([conditions[:8], noise])),
                               expected, rtol=1e-5, atol=1e-4)
    under_jax = samples_under_jax(tmp_path / "generator.keras", conditions[:8], noise, tmp_path)
    # a cell at its firing boundary (u ~ p, log(p - u)) amplifies float rounding: seen once in
    # 35 200 cells, 0.13 % off
    assert np.isclose(under_jax, expected, rtol=1e-4, atol=1e-3).mean() > 0.999
    np.testing.assert_allclose(under_jax, expected, rtol=1e-2, atol=1e-2)


def test_normal_cdf_keeps_its_digits_in_the_lower_tail():
    from scipy import stats

    n = np.linspace(-9.0, 9.0, 721).astype(np.float32)
    u, log_u = (ops.convert_to_numpy(a) for a in components.normal_cdf_and_log(n))
    np.testing.assert_allclose(u, stats.norm.cdf(n.astype(np.float64)), rtol=2e-5)
    np.testing.assert_allclose(log_u, stats.norm.logcdf(n.astype(np.float64)), atol=2e-5)


def test_deflection_puts_a_component_at_d_over_its_energy():
    """A bent track lands at x = d E_d / E: the centre times the energy is the same at every
    energy, and the head saves the option (off by default: the shipped heads' layout)."""
    head = _head(n_components=1, response_spread=0.0, deflection_energy=1000.0)
    assert _head(n_components=1).params_per_layer == PARAMS_PER_LAYER
    assert head.params_per_layer == PARAMS_PER_LAYER + 2
    per_layer = np.zeros((1, head.n_layers, head.params_per_layer))
    per_layer[..., 3] = per_layer[..., 4] = math.log(0.05)
    per_layer[..., 7] = 0.5              # half a cell at 1 GeV along x, none along y
    params = np.concatenate([[0.0], per_layer.ravel(), [0.0]])
    energies = np.float32([[250.0], [500.0], [1000.0]])
    mu = ops.convert_to_numpy(head.expected(_raw(head, 3, params), energies)[0])
    profile_x = mu.sum(axis=(1, 3))                                # [N, x]
    x = (np.arange(SHAPE[0]) - (SHAPE[0] - 1) / 2.0) * 10.0        # cell centres, mm
    centre_x = profile_x @ x / profile_x.sum(axis=1)
    np.testing.assert_allclose(centre_x, [20.0, 10.0, 5.0], atol=0.6)
    centre_y = mu.sum(axis=(1, 2)) @ x / mu.sum(axis=(1, 2, 3))
    np.testing.assert_allclose(centre_y, 0.0, atol=1e-3)
    restored = ShowerComponentsHead.from_config(head.get_config())
    assert restored.deflection_energy == 1000.0 and restored.n_params == head.n_params


def test_noise_per_layer_fires_each_layer_at_its_own_gaussian_tail(tmp_path):
    """One nominal noise per layer (the SiW-ECAL's silicon thicknesses): far from the shower a
    cell reads noise above the threshold at the Gaussian tail of its own layer's sigma."""
    from scipy.stats import norm

    sigma = [0.05, 0.25, 0.5]
    head = _head(n_components=1, threshold=0.5, noise_sigma=sigma)
    assert head.log_noise.shape == (1, 1, 3)                    # layer axis last here
    params = _params(head, centre=(0.0, 0.0), log_core=math.log(0.01), log_tail=math.log(0.01))
    out = ops.convert_to_numpy(head([_raw(head, 400, params), np.float32([[50.0]] * 400)]))
    far = out[:, :2, :2, :]                              # 2-3 cells from the centred spot
    fired = (far > 0).mean(axis=(0, 1, 2))
    expected = norm.sf(0.5 / np.asarray(sigma))
    assert fired[0] < 0.005                    # 10 sigma: only a rare spot of the shower
    np.testing.assert_allclose(fired[1:], expected[1:], atol=0.03)
    config = head.get_config()
    assert config["noise_sigma"] == pytest.approx(sigma)
    rebuilt = ShowerComponentsHead.from_config(config)
    np.testing.assert_allclose(ops.convert_to_numpy(rebuilt.log_noise),
                               ops.convert_to_numpy(head.log_noise))
    with pytest.raises(ValueError, match="noise_sigma"):
        _head(noise_sigma=[0.1, 0.2])


@pytest.mark.parametrize("track_component", [True, False])
def test_a_track_component_starts_a_mip_crossing_in_one_cell_of_every_layer(track_component):
    """Events that are a MIP track (1.2 MIP in one cell of each layer): started as a track, the
    first component carries the energy that the data holds in each layer's hottest cell and
    reads out above the 0.5 MIP threshold in nearly every layer; started as a shower
    component (spots of 20 thresholds) a crossing fires in about one layer in ten."""
    head = _head(threshold=0.5, n_components=3)
    tracks = np.zeros((50,) + SHAPE, np.float32)
    tracks[:, 3, 3, :] = 1.2
    np.testing.assert_allclose(components.hottest_cell_shares(head, tracks), 1.0)
    params = components.initial_parameters(head, tracks, track_component=track_component)
    shares = np.exp(params[:3]) / np.exp(params[:3]).sum()
    out = ops.convert_to_numpy(head([_raw(head, 400, params), np.float32([[3.6]] * 400)]))
    layer_hit = (out.max(axis=(1, 2)) > 0).mean()
    if track_component:
        assert shares[0] == pytest.approx(0.99, abs=1e-6)
        assert layer_hit > 0.9
        hottest = out.reshape(400, -1, 3).max(axis=1).sum(axis=1) / np.maximum(
            out.sum(axis=(1, 2, 3)), 1e-9)
        assert np.median(hottest) > 0.9
    else:
        np.testing.assert_allclose(shares, 1.0 / 3.0)
        assert layer_hit < 0.3


def _fragment_params(head, firing_logits, centre=(1.5, -0.5), log_share=math.log(0.5),
                     log_width=math.log(0.05), log_spread=math.log(0.01),
                     log_radius=math.log(0.01)):
    """The component narrow at (-2.5, -2.5) in layer 0 only; fragment slots with the given
    firing logit per layer, all at ``centre``."""
    components_part = _params(head, centre=(-2.5, -2.5), log_core=math.log(0.01),
                              log_tail=math.log(0.01))
    per_layer = components_part[head.n_components:-1].reshape(
        head.n_components, head.n_layers, PARAMS_PER_LAYER)
    per_layer[..., 0] = [20.0] + [-20.0] * (head.n_layers - 1)
    slots = np.zeros((1, head.n_layers, components.FRAGMENT_PARAMS))
    slots[..., 0] = firing_logits
    slots[..., 1], slots[..., 2] = log_share, log_width
    slots[..., 3], slots[..., 4] = centre
    slots[..., 5], slots[..., 6] = log_spread, log_radius
    return np.concatenate([components_part, slots.ravel()])


def test_a_fragment_that_fires_puts_its_share_in_one_crystal_of_its_layer():
    head = _head(n_components=1, response_spread=0.0, fragments_per_layer=1)
    assert head.n_params == 1 + 3 * PARAMS_PER_LAYER + 1 + 3 * components.FRAGMENT_PARAMS
    raw = _raw(head, 200, _fragment_params(head, [-20.0, -20.0, 20.0]), seed=6)
    cells = ops.convert_to_numpy(head([raw, np.float32([[90.0]] * 200)]))
    np.testing.assert_allclose(cells.sum(axis=(1, 2, 3)), 90.0, rtol=1e-4)
    fragment_layer = cells[..., 2]                                   # [N, x, y]
    assert cells[..., 1].max() < 1e-3                       # neither the shower nor a slot
    # every event fired (p = 1 - 1e-6): a median share m = 0.5 of E next to the shower's
    # sampled ~E (its spots fluctuate by ~10 %), then the event is scaled back to E, so the
    # layer holds about m / (1 + m) of it
    fraction = fragment_layer.sum(axis=(1, 2)) / 90.0
    assert 0.25 < fraction.min() and fraction.max() < 0.42
    np.testing.assert_allclose(np.median(fraction), 1.0 / 3.0, rtol=0.03)
    assert (fragment_layer[:, 4, 2] > 0.97 * fragment_layer.sum(axis=(1, 2))).all()


def test_fragments_fire_at_their_rate_and_spread_around_their_centre():
    head = _head(n_components=1, response_spread=0.0, fragments_per_layer=1)
    n, rate, spread = 4000, 0.2, 0.6
    raw = _raw(head, n, _fragment_params(head, [-20.0, -20.0, math.log(rate / (1 - rate))],
                                         centre=(0.0, 0.0), log_spread=math.log(spread)),
               seed=7)
    fragment_layer = ops.convert_to_numpy(head([raw, np.float32([[90.0]] * n)]))[..., 2]
    fired = fragment_layer.sum(axis=(1, 2)) > 0
    assert abs(fired.mean() - rate) < 4 * math.sqrt(rate * (1 - rate) / n)
    # the hottest crystal's x index (cell centres at -2.5 ... 2.5 cells) of the fired events:
    # a normal of sigma 0.6 cells read in unit cells has variance 0.6^2 + 1/12 (Sheppard)
    x = np.unravel_index(fragment_layer[fired].reshape(fired.sum(), -1).argmax(axis=1),
                         SHAPE[:2])[0] - 2.5
    np.testing.assert_allclose(np.std(x), math.sqrt(0.36 + 1 / 12), atol=0.05)
    assert abs(np.mean(x)) < 0.1


def test_a_fragment_gets_a_pathwise_gradient_for_its_rate_and_share():
    import tensorflow as tf

    head = _head(n_components=1, response_spread=0.0, fragments_per_layer=1)
    params = _fragment_params(head, [-20.0, -20.0, 0.0], log_radius=math.log(0.5))
    raw = keras.Variable(_raw(head, 256, params, seed=8))
    with tf.GradientTape() as tape:
        cells = head([raw, np.float32([[90.0]] * 256)])
        deep = ops.sum(cells[..., 2])
    grad = ops.convert_to_numpy(tape.gradient(deep, raw)).sum(axis=0)
    assert np.all(np.isfinite(grad))
    slot = 1 + 3 * PARAMS_PER_LAYER + 1 + 2 * components.FRAGMENT_PARAMS   # layer 2's slot
    firing, share = grad[slot], grad[slot + 1]
    assert firing > 0 and share > 0      # more often, or more energy: more in that layer


def test_fragment_slots_are_counted_in_the_config_and_the_generator_noise():
    head = _head(fragments_per_layer=2)
    restored = ShowerComponentsHead.from_config(head.get_config())
    assert restored.fragments_per_layer == 2 and restored.n_params == head.n_params
    assert head.noise_units == 2 * head.n_cells + 2 * 3 * components.FRAGMENT_NOISE
    generator = components.component_generator(8, 3, head, hidden=(16,))
    assert generator.inputs[0].shape[-1] == 8 + head.noise_units
    assert generator.output.shape[-1] == head.input_units
    with pytest.raises(ValueError, match="fragments_per_layer = -1"):
        _head(fragments_per_layer=-1)
