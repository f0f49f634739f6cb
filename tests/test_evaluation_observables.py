"""Shower observables on hand-made tiny images, in every axis order."""

from types import SimpleNamespace

import numpy as np
import pytest

from ddsim_gan.evaluation import observables as O


def _detector(axes, shape, cell_size, threshold=0.5):
    return SimpleNamespace(name="toy", axes=axes, sample_shape=shape, cell_size=cell_size,
                           threshold=threshold, sample_unit="MeV", sample_names=None,
                           sample_units=None)


def test_single_hit_centre_and_width():
    image = np.zeros((1, 5, 4))
    image[0, 4, 1] = 3.0
    assert O.energy_centre(image, 0, 10.0)[0] == pytest.approx((4 - 2) * 10.0)
    assert O.energy_centre(image, 1, 2.0)[0] == pytest.approx((1 - 1.5) * 2.0)
    assert O.energy_width(image, 0, 10.0)[0] == pytest.approx(0.0)
    assert O.energy_width(image, 1, 2.0)[0] == pytest.approx(0.0)


def test_two_hits_width_and_empty_event():
    images = np.zeros((2, 4, 1))
    images[0, 0, 0] = images[0, 2, 0] = 1.0       # coordinates -1.5 and 0.5 cells
    assert O.energy_centre(images, 0)[0] == pytest.approx(-0.5)
    assert O.energy_width(images, 0)[0] == pytest.approx(1.0)
    assert O.energy_centre(images, 0)[1] == 0.0 and O.energy_width(images, 0)[1] == 0.0


def test_counts_and_sparsity():
    images = np.array([[[0.0, 0.5], [0.6, 2.0]]])
    assert O.total_energy(images)[0] == pytest.approx(3.1)
    assert O.n_hits(images, 0.5)[0] == 2            # strictly above threshold
    assert O.sparsity(images, 0.5)[0] == pytest.approx(0.5)


@pytest.mark.parametrize("axes,shape,layer", [
    (("x", "y"), (4, 3), None),
    (("layer", "x", "y"), (3, 4, 5), 0),
    (("x", "y", "layer"), (4, 5, 3), 2),
])
def test_shower_observables_any_axis_order(axes, shape, layer):
    rng = np.random.default_rng(0)
    samples = rng.exponential(size=(50,) + shape) * (rng.random((50,) + shape) < 0.3)
    cell = tuple(float(10 + i) for i in range(len(shape)))
    detector = _detector(axes, shape, cell)
    obs = O.shower_observables(samples, detector)
    units = O.observable_units(detector)
    assert list(obs) == list(units)
    assert all(v.shape == (50,) for v in obs.values())
    np.testing.assert_allclose(obs["E_total"], samples.reshape(50, -1).sum(1))
    x_index = axes.index("x")
    np.testing.assert_allclose(obs["centre_x"], O.energy_centre(samples, x_index, cell[x_index]))
    np.testing.assert_allclose(obs["width_x"], O.energy_width(samples, x_index, cell[x_index]))
    assert units["centre_x"] == "mm" and units["E_total"] == "MeV"
    if layer is None:
        assert not any(k.startswith("E_layer") for k in obs)
    else:
        energies = O.layer_energies(samples, layer)
        assert energies.shape == (50, shape[layer])
        np.testing.assert_allclose(energies.sum(1), obs["E_total"])      # energy conservation
        np.testing.assert_allclose(O.longitudinal_profile(samples, layer), energies.mean(0))
        assert obs[f"E_layer_{shape[layer] - 1:02d}"] == pytest.approx(energies[:, -1])
        features, names = O.high_level_features(obs)
        assert "sparsity" not in names and "E_total" not in names
        assert features.shape == (50, len(names))


def test_single_hit_in_darkshine_layout():
    detector = _detector(("x", "y", "layer"), (20, 20, 11), (25.0, 25.0, 40.0), 1.0)
    sample = np.zeros((1, 20, 20, 11), np.float32)
    sample[0, 3, 12, 5] = 100.0
    obs = O.shower_observables(sample, detector)
    assert obs["centre_x"][0] == pytest.approx((3 - 9.5) * 25.0)
    assert obs["centre_y"][0] == pytest.approx((12 - 9.5) * 25.0)
    assert obs["width_x"][0] == 0.0 and obs["n_hits"][0] == 1
    assert obs["E_layer_05"][0] == pytest.approx(100.0)
    with pytest.raises(ValueError, match="expected \\(N, 20, 20, 11\\)"):
        O.shower_observables(np.zeros((2, 20, 11)), detector)


def test_radial_profile_conserves_energy():
    rng = np.random.default_rng(1)
    samples = rng.exponential(size=(20, 6, 6, 2))
    edges, energies = O.radial_energies(samples, (0, 1), (5.0, 5.0), bins=8)
    np.testing.assert_allclose(energies.sum(1), samples.reshape(20, -1).sum(1))
    assert O.radial_profile(samples, (0, 1), 5.0, bins=edges)[1] == pytest.approx(energies.mean(0))
    single = np.zeros((1, 5, 5))
    single[0, 2, 2] = 1.0
    assert O.radial_energies(single, (0, 1), 1.0, bins=4)[1][0, 0] == 1.0   # at radius 0


def test_vector_detector_observables():
    detector = SimpleNamespace(name="vec", axes=None, sample_shape=(2,),
                               sample_names=("S1", "S2"), sample_units=("PE", "PE"))
    obs = O.shower_observables(np.array([[1.0, 2.0], [3.0, 4.0]]), detector)
    assert list(obs) == ["S1", "S2"] and obs["S2"].tolist() == [2.0, 4.0]
    assert O.observable_units(detector) == {"S1": "PE", "S2": "PE"}
