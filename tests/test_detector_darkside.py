"""The DarkSide-20k reference simulator: contract, reproducibility and the physics it must carry."""

import numpy as np
import pytest

from ddsim_gan import detectors
from ddsim_gan.detectors import ConditionError
from ddsim_gan.detectors.darkside import lindhard_factor

NR, ER = 0, 1


@pytest.fixture(scope="module")
def tpc():
    return detectors.get("darkside")


@pytest.fixture(scope="module")
def events(tpc):
    return tpc.simulate(20000, seed=3)


def at(tpc, energy, recoil_type, n=20000, seed=0):
    """``n`` recoils of one energy and type: columns S1, S2, f200."""
    conditions = np.column_stack([np.full(n, energy), np.full(n, recoil_type)])
    return tpc.simulate_at(conditions, seed=seed)


def test_registry_returns_one_described_detector(tpc):
    assert detectors.get("darkside") is tpc
    assert "darkside" in detectors.names()
    assert tpc.condition_names == ("E_recoil", "recoil_type")
    assert tpc.conditions[1].is_categorical and tpc.conditions[1].labels == ("NR", "ER")
    assert tpc.sample_shape == (3,) and tpc.axes is None and tpc.non_negative
    assert tpc.units == {"E_recoil": "keV", "recoil_type": "", "S1": "PE", "S2": "PE", "f200": ""}


def test_simulate_shapes_dtypes_and_ranges(events, tpc):
    conditions, samples = events
    assert conditions.shape == (20000, 2) and conditions.dtype == np.float32
    assert samples.shape == (20000, 3) and samples.dtype == np.float32
    assert tpc.out_of_range_rows(conditions).size == 0
    assert set(np.unique(conditions[:, 1])) == {0.0, 1.0}
    assert 0.45 < conditions[:, 1].mean() < 0.55  # NR/ER 50/50
    assert np.isfinite(samples).all() and samples.min() >= 0
    assert samples[:, 2].max() <= 1.0


def test_same_seed_same_events_other_seed_other_events(tpc):
    a = tpc.simulate(500, seed=5)
    b = tpc.simulate(500, seed=5)
    c = tpc.simulate(500, seed=6)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])
    from_sequence = tpc.simulate_at(a[0], np.random.SeedSequence(9))
    np.testing.assert_array_equal(from_sequence, tpc.simulate_at(a[0], np.random.SeedSequence(9)))


def test_lindhard_quenching_for_argon():
    assert lindhard_factor(50.0) == pytest.approx(0.36, abs=0.01)  # k = 0.144
    assert lindhard_factor(5.0) < lindhard_factor(50.0) < lindhard_factor(235.0) < 1.0


def test_pulse_shape_separates_nuclear_from_electron_recoils(tpc):
    nr, er = at(tpc, 60.0, NR), at(tpc, 60.0, ER)
    assert 0.66 < np.median(nr[:, 2]) < 0.74
    assert 0.27 < np.median(er[:, 2]) < 0.33
    # f200 is binomial in the detected photons: its width shrinks as S1 grows.
    er_low, er_high = at(tpc, 8.0, ER), at(tpc, 200.0, ER)
    assert er_high[:, 2].std() < 0.5 * er_low[:, 2].std()


def test_nuclear_recoils_are_quenched(tpc):
    for energy in (20.0, 100.0):
        nr, er = at(tpc, energy, NR, 5000), at(tpc, energy, ER, 5000)
        assert nr[:, 0].mean() < 0.35 * er[:, 0].mean()
    # About 1.5-2.3 PE/keVnr with the field on; ER around 7 PE/keV (8 PE/keV at null field).
    assert 1.3 < at(tpc, 40.0, NR, 5000)[:, 0].mean() / 40.0 < 1.9
    assert 6.5 < at(tpc, 41.5, ER, 5000)[:, 0].mean() / 41.5 < 7.8


def test_recombination_anti_correlates_s1_and_s2_at_fixed_energy(tpc):
    for recoil_type in (NR, ER):
        s1, s2, _ = at(tpc, 100.0, recoil_type).T
        assert np.corrcoef(s1, s2)[0, 1] < -0.3


def test_s2_is_about_23_pe_per_electron_and_grows_with_energy(tpc):
    s2_low, s2_high = at(tpc, 20.0, ER, 5000)[:, 1], at(tpc, 200.0, ER, 5000)[:, 1]
    assert s2_high.mean() > 3 * s2_low.mean()
    electrons_per_kev = s2_low.mean() / 23.0 / 20.0
    assert 8.0 < electrons_per_kev < 25.0
    # S2/S1 is larger for ER than for NR of the same S1 (~ 60 PE: 9 keV ER, 38 keVnr NR).
    er, nr = at(tpc, 9.0, ER, 5000), at(tpc, 38.0, NR, 5000)
    assert np.median(er[:, 1] / er[:, 0]) > np.median(nr[:, 1] / nr[:, 0])


def test_relative_s1_resolution_improves_with_energy(tpc):
    widths = [np.std(s1) / np.mean(s1) for s1 in (at(tpc, e, NR, 5000)[:, 0] for e in (10, 50, 200))]
    assert widths[0] > widths[1] > widths[2]
    assert widths[0] > 0.2 and widths[2] < 0.1


def test_weaker_drift_field_gives_more_light_and_less_charge():
    from ddsim_gan.detectors.darkside import DarkSide20k

    weak = DarkSide20k(drift_field_v_cm=20.0)
    strong = DarkSide20k(drift_field_v_cm=1000.0)
    conditions = np.column_stack([np.full(2000, 50.0), np.zeros(2000)])
    s_weak, s_strong = weak.simulate_at(conditions, 1), strong.simulate_at(conditions, 1)
    assert s_weak[:, 1].mean() < 0.5 * s_strong[:, 1].mean()
    assert s_weak[:, 0].mean() > s_strong[:, 0].mean()


def test_bad_conditions_name_the_problem(tpc):
    with pytest.raises(ConditionError, match=r"expected \(N, 2\)"):
        tpc.simulate_at(np.ones((4, 3)))
    bad = np.column_stack([np.full(5, 50.0), np.zeros(5)])
    bad[3, 0] = np.nan
    with pytest.raises(ConditionError, match="row 3"):
        tpc.simulate_at(bad)
    bad[3, 0] = 50.0
    bad[2, 1] = 0.5
    with pytest.raises(ConditionError, match=r"row 2 has recoil_type = 0.5"):
        tpc.simulate_at(bad)
    bad[2, 1] = 1.0
    bad[4, 0] = -3.0
    with pytest.raises(ConditionError, match=r"row 4 has E_recoil = -3"):
        tpc.simulate_at(bad)
    with pytest.raises(ConditionError, match="outside the simulated range"):
        tpc.check_conditions([[500.0, 0.0]], check_range=True)
