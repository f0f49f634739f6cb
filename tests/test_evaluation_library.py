"""ShowerLibrary: nearest-neighbour replay, categories, energy scaling, seeds, storage; and the
side-by-side comparison of generators in the report."""

import numpy as np
import pytest

from ddsim_gan import detectors
from ddsim_gan.detectors import Condition, ConditionError
from ddsim_gan.evaluation import compare_generators, write_report
from ddsim_gan.evaluation.library import ShowerLibrary


class _Tagged(detectors.Detector):
    """Vector output whose first component is the stored row's index, so a lookup is visible.

    ``x`` spans [0, 1], ``y`` [0, 1000] (both linear), ``p`` [1, 1000] (log: > x20), ``kind`` is
    categorical."""

    name = "tagged"
    conditions = (Condition("x", "cm", 0.0, 1.0), Condition("y", "cm", 0.0, 1000.0),
                  Condition("p", "GeV", 1.0, 1000.0), Condition("kind", "", 0, 1, ("a", "b")))
    sample_shape = (2,)
    sample_names = ("row", "zero")
    sample_units = ("", "")
    non_negative = False

    def sample_conditions(self, n, seed=None):
        raise NotImplementedError

    def simulate_at(self, conditions, seed=None):
        raise NotImplementedError


def _library(conditions, k=1):
    conditions = np.asarray(conditions, np.float32)
    samples = np.stack([np.arange(len(conditions)), np.zeros(len(conditions))], axis=1)
    return ShowerLibrary(_Tagged(), conditions, samples.astype(np.float32), k=k)


def _rows(library, conditions, seed=0):
    return library.generate(np.asarray(conditions, np.float32), seed=seed)[:, 0].astype(int)


def test_nearest_in_standardized_condition_space():
    # x spreads over ~0.5, y over ~500: in raw units y would decide everything
    stored = [[0.0, 0.0, 10, 0], [1.0, 500.0, 10, 0], [0.0, 1000.0, 10, 0], [1.0, 1000.0, 10, 0]]
    library = _library(stored)
    # raw distance: row 0 is nearer (50 vs 450); standardized: row 1 (1.1 sigma vs 1.8)
    assert _rows(library, [[0.9, 50.0, 10, 0]]).tolist() == [1]
    assert _rows(library, [[0.1, 950.0, 10, 0], [0.9, 990.0, 10, 0]]).tolist() == [2, 3]


def test_wide_range_condition_is_compared_in_log_space():
    library = _library([[0.5, 500.0, 2.0, 0], [0.5, 500.0, 20.0, 0]])
    # linear: 8 is nearer to 2 (6 vs 12); log: ln 4 > ln 2.5, so 20 is nearer
    assert _rows(library, [[0.5, 500.0, 8.0, 0]]).tolist() == [1]


def test_categorical_conditions_must_match_exactly():
    library = _library([[0.5, 500.0, 10, 0], [0.0, 0.0, 1, 1]])
    assert _rows(library, [[0.5, 500.0, 10, 1], [0.0, 0.0, 1, 0]]).tolist() == [1, 0]
    only_a = _library([[0.5, 500.0, 10, 0], [0.2, 100.0, 10, 0]])
    with pytest.raises(ConditionError, match="kind = b"):
        only_a.generate(np.float32([[0.5, 500.0, 10, 1]]))


def test_k_nearest_pool_and_identical_conditions():
    stored = [[x, 500.0, 10, 0] for x in (0.0, 0.1, 0.2, 0.3, 0.9, 1.0)]
    library = _library(stored, k=3)
    picks = np.concatenate([_rows(library, [[0.0, 500.0, 10, 0]] * 50, seed=s) for s in range(4)])
    assert set(picks) == {0, 1, 2}                            # the 3 nearest, each drawn
    # 40 showers at one energy: k=1 still draws from all of them (no spread lost to ties)
    fixed = _library([[0.5, 500.0, 10, 0]] * 40 + [[0.5, 500.0, 100, 0]], k=1)
    picks = _rows(fixed, [[0.5, 500.0, 11, 0]] * 400)
    assert set(picks) == set(range(40))


def test_reproducible_per_seed():
    rng = np.random.default_rng(0)
    stored = np.column_stack([rng.uniform(0, 1, 300), rng.uniform(0, 1000, 300),
                              rng.uniform(1, 1000, 300), rng.integers(0, 2, 300)])
    library = _library(stored, k=10)
    requests = np.float32(stored[:50] + [0.01, 1.0, 0.0, 0.0])
    np.testing.assert_array_equal(library.generate(requests, seed=5),
                                  library.generate(requests, seed=5))
    assert not np.array_equal(library.generate(requests, seed=5), library.generate(requests, 6))


def test_wrong_condition_width_is_a_condition_error():
    library = _library([[0.5, 500.0, 10, 0]])
    with pytest.raises(ConditionError, match=r"expected \(N, 4\)"):
        library.generate(np.zeros((3, 2), np.float32))
    with pytest.raises(ConditionError, match=r"expected \(N, 4\)"):
        ShowerLibrary(_Tagged(), np.zeros((3, 3)), np.zeros((3, 2), np.float32))


def test_energy_scaling_of_images(mini_calo, mini_data):
    conditions = np.float32([[100.0], [200.0]])
    showers = mini_calo.simulate_at(conditions, seed=0)
    library = ShowerLibrary(mini_calo, conditions, showers, energy_condition="E", k=1)
    out = library.generate(np.float32([[140.0], [190.0]]))
    expected = np.stack([showers[0] * 1.4, showers[1] * 0.95])
    expected = np.where(expected > mini_calo.threshold, expected, 0.0)
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    assert out.dtype == np.float32 and out.shape == (2, 4, 4, 3)
    unscaled = ShowerLibrary(mini_calo, conditions, showers, k=1)
    np.testing.assert_array_equal(unscaled.generate(np.float32([[140.0]])), showers[:1])
    with pytest.raises(ValueError, match="vector outputs"):
        ShowerLibrary(_Tagged(), np.float32([[0, 0, 1, 0]]), np.zeros((1, 2), np.float32),
                      energy_condition="p")
    with pytest.raises(ValueError, match="not a condition"):
        ShowerLibrary(mini_calo, conditions, showers, energy_condition="energy")


def test_save_load_and_size(mini_calo, mini_data, tmp_path):
    conditions, showers = mini_data
    library = ShowerLibrary(mini_calo, conditions, showers, energy_condition="E", k=4)
    assert library.nbytes == conditions.astype(np.float32).nbytes + showers.nbytes
    path = library.save(tmp_path / "library.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["library.npz"]
    loaded = ShowerLibrary.load(path, detector=mini_calo)
    assert loaded.k == 4 and loaded.energy_condition == "E" and len(loaded) == len(library)
    requests = mini_calo.sample_conditions(30, seed=1)
    np.testing.assert_array_equal(loaded.generate(requests, seed=2),
                                  library.generate(requests, seed=2))
    with pytest.raises(ValueError, match="mini_calo"):
        ShowerLibrary.load(path, detector="darkshine")


class _Scaled:
    """A stand-in 'model': the reference simulator with a 30 % miscalibration."""

    nbytes = 1234

    def __init__(self, detector):
        self.detector = detector

    def generate(self, conditions, seed=0):
        return self.detector.simulate_at(conditions, seed=seed + 100) * 1.3


def test_compare_generators_puts_library_beside_a_model(mini_calo, tmp_path):
    train_conditions, train = mini_calo.simulate(3000, seed=10)
    conditions, ref = mini_calo.simulate(400, seed=11)
    ref2 = mini_calo.simulate_at(conditions, seed=12)
    library = ShowerLibrary(mini_calo, train_conditions, train, energy_condition="E")
    comparison = compare_generators(
        mini_calo, conditions, ref, ref2, {"library": library, "scaled": _Scaled(mini_calo)},
        metrics=("W1/sigma:E_total", "W1/sigma:mean", "KS:mean"), n_bootstrap=2)
    rows = {row["name"]: row for row in comparison["rows"]}
    assert list(rows) == ["library", "scaled"] and comparison["n_events"] == 400
    assert rows["library"]["values"]["W1/sigma:E_total"] < 0.1            # energies rescaled
    assert rows["scaled"]["values"]["W1/sigma:E_total"] > 0.5
    assert rows["library"]["nbytes"] == library.nbytes and rows["scaled"]["nbytes"] == 1234
    assert all(row["samples_per_second"] > 0 for row in rows.values())
    assert set(comparison["floor"]) == {"W1/sigma:E_total", "W1/sigma:mean", "KS:mean"}
    assert comparison["floor"]["W1/sigma:mean"] < rows["scaled"]["values"]["W1/sigma:mean"]
    with pytest.raises(KeyError, match="W1/sigma:E_tot"):
        compare_generators(mini_calo, conditions, ref, None, {"library": library},
                           metrics=("W1/sigma:E_tot",), n_bootstrap=0)

    result = {"detector": "mini_calo", "n_reference": 400, "n_generated": 400, "metrics": [],
              "passed": True, "failed": [], "comparison": comparison}
    markdown = open(write_report(result, tmp_path)["markdown"]).read()
    assert "## Generators compared" in markdown
    header = "| generator | W1/sigma:E_total | W1/sigma:mean | KS:mean | samples/s | size |"
    assert header in markdown
    assert "| library |" in markdown and "| reference vs reference (floor) |" in markdown
    assert "1.21 KiB" in markdown


def test_generator_size_of_a_keras_sampler(mini_calo, mini_data):
    from ddsim_gan.evaluation import generator_nbytes

    class _Model:                       # what generator_nbytes reads of a ConditionalGAN
        class sampler:
            weights = [np.zeros((3, 4), np.float32), np.zeros(4, np.float64)]

    assert generator_nbytes(_Model()) == 3 * 4 * 4 + 4 * 8
    assert generator_nbytes(object()) is None



def _comparison(gan_values, gan_speed, library_values):
    metrics = ["W1/sigma:mean", "classifier_auc"]
    return {"metrics": metrics, "n_events": 10, "floor": None, "rows": [
        {"name": "GAN", "values": dict(zip(metrics, gan_values)), "errors": {},
         "samples_per_second": gan_speed, "nbytes": 1_000},
        {"name": "shower library (k=10)", "values": dict(zip(metrics, library_values)),
         "errors": {}, "samples_per_second": 1000.0, "nbytes": 100_000}]}


# (W1/sigma, AUC): the AUC counts by its distance from 0.5
@pytest.mark.parametrize("gan_values, gan_speed, library_values, verdict", [
    ((0.5, 0.97), 500.0, (0.01, 0.50), "does not beat the library on fidelity or speed"),
    ((0.5, 0.97), 5000.0, (0.01, 0.50), "beats the library on speed only, not on fidelity"),
    ((0.005, 0.49), 500.0, (0.01, 0.55), "beats the library on fidelity, not on speed"),
    ((0.005, 0.60), 5000.0, (0.01, 0.55),
     "beats the library on fidelity for some metrics only and on speed"),
])
def test_report_says_whether_the_gan_beats_the_library(gan_values, gan_speed, library_values,
                                                        verdict):
    from ddsim_gan.evaluation.report import comparison_lines

    lines = comparison_lines(_comparison(gan_values, gan_speed, library_values))
    assert lines[-1].startswith(f"**GAN {verdict}**"), lines[-1]
    assert lines[-1].endswith("0.01x its size.")
