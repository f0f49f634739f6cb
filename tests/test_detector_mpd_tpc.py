"""The MPD TPC reference simulator: contract, reproducibility and the physics it must carry."""

import numpy as np
import pytest
from scipy import stats

from ddsim_gan import detectors
from ddsim_gan.detectors import ConditionError

PAD, TIME = 0, 1


@pytest.fixture(scope="module")
def tpc():
    return detectors.get("mpd_tpc")


@pytest.fixture(scope="module")
def segments(tpc):
    return tpc.simulate(4000, seed=11)


def at(tpc, crossing, dip, drift, pad_coordinate, n=1500, seed=0):
    """Responses of ``n`` segments with the same conditions."""
    conditions = np.tile(np.array([[crossing, dip, drift, pad_coordinate]], np.float32), (n, 1))
    return tpc.simulate_at(conditions, seed=seed)


def moments(samples, axis):
    """Per-segment charge centre and RMS width along ``axis`` (0 = pads, 1 = time), in cells."""
    profile = samples.sum(axis=2 if axis == PAD else 1).astype(np.float64)
    index = np.arange(profile.shape[1])
    total = profile.sum(axis=1)
    centre = (profile * index).sum(axis=1) / total
    width = np.sqrt((profile * index ** 2).sum(axis=1) / total - centre ** 2)
    return centre, width


def test_registry_returns_one_described_detector(tpc):
    assert detectors.get("mpd_tpc") is tpc
    assert "mpd_tpc" in detectors.names()
    assert tpc.condition_names == ("crossing_angle", "dip_angle", "drift_length", "pad_coordinate")
    assert tpc.sample_shape == (8, 16) and tpc.axes == ("pad", "time")
    assert tpc.cell_size == (5.0, 100.0) and tpc.threshold > 0 and tpc.non_negative
    assert tpc.units == {"crossing_angle": "rad", "dip_angle": "rad", "drift_length": "mm",
                         "pad_coordinate": "mm", "samples": "ADC"}


def test_simulate_shapes_dtypes_and_condition_spectrum(segments, tpc):
    conditions, samples = segments
    assert conditions.shape == (4000, 4) and conditions.dtype == np.float32
    assert samples.shape == (4000, 8, 16) and samples.dtype == np.float32
    assert np.isfinite(samples).all() and samples.min() >= 0
    ranges = tpc.condition_ranges
    assert (conditions >= ranges[:, 0]).all() and (conditions <= ranges[:, 1]).all()
    crossing, dip, drift, _ = conditions.T
    # soft tracks curl: large crossing angles are rarer, both charges alike
    assert np.mean(np.abs(crossing) < 0.15) > 2 * np.mean(np.abs(crossing) > 0.25)
    assert abs(np.mean(np.sign(crossing))) < 0.1
    assert np.mean(dip > 0) > 0.8  # tracks from the vertex head for the end-caps
    assert np.corrcoef(np.abs(dip), drift)[0, 1] < -0.3  # forward tracks end near the end-cap


def test_same_seed_same_response_other_seed_other_response(tpc):
    a = tpc.simulate(200, seed=5)
    b = tpc.simulate(200, seed=np.random.SeedSequence(5))
    c = tpc.simulate(200, seed=6)
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def test_readout_is_integer_saturating_and_zero_suppressed(segments, tpc):
    _, samples = segments
    hits = samples[samples > 0]
    np.testing.assert_array_equal(hits, np.round(hits))
    assert hits.min() >= tpc.threshold and samples.max() == 1023.0  # rare big deltas saturate
    above = samples > 0
    neighbour = np.zeros_like(above)
    neighbour[..., 1:] |= above[..., :-1]
    neighbour[..., :-1] |= above[..., 1:]
    assert not (above & ~neighbour).any()  # no isolated samples survive zero suppression
    occupancy = above.mean(axis=(1, 2))
    assert np.median(occupancy) < 0.25 and (occupancy > 0).all()


def test_charge_is_landau_like(segments):
    _, samples = segments
    total = samples.sum(axis=(1, 2))
    assert stats.skew(total) > 2.0
    assert np.percentile(total, 99) > 4 * np.median(total)


def test_pad_centre_follows_the_pad_coordinate(tpc):
    centres = [moments(at(tpc, 0.0, 0.0, 500.0, pc, seed=int(pc)), PAD)[0].mean()
               for pc in (0.5, 2.5, 4.5)]
    # pad 3 spans [15, 20) mm of the window: centre (15 + pc) / 5 - 0.5 pads
    np.testing.assert_allclose(centres, [2.6, 3.0, 3.4], atol=0.05)


def test_widths_grow_with_drift_length(tpc):
    short, long = at(tpc, 0.0, 0.0, 20.0, 2.5, seed=1), at(tpc, 0.0, 0.0, 1650.0, 2.5, seed=2)
    assert moments(long, PAD)[1].mean() > 1.3 * moments(short, PAD)[1].mean()  # transverse
    assert moments(long, TIME)[1].mean() > 1.2 * moments(short, TIME)[1].mean()  # longitudinal
    assert (long > 0).mean() > (short > 0).mean()


def test_pad_width_grows_with_crossing_angle_and_time_width_with_dip(tpc):
    straight = at(tpc, 0.0, 0.0, 200.0, 2.5, seed=3)
    crossing = at(tpc, 0.35, 0.0, 200.0, 2.5, seed=4)
    dipped = at(tpc, 0.0, 1.0, 200.0, 2.5, seed=5)
    assert moments(crossing, PAD)[1].mean() > 1.05 * moments(straight, PAD)[1].mean()
    assert moments(dipped, TIME)[1].mean() > 1.3 * moments(straight, TIME)[1].mean()
    # crossing and dip together tilt the cluster in the (pad, time) plane; the sign follows them
    tilts = []
    for sign in (1.0, -1.0):
        s = at(tpc, sign * 0.3, 0.9, 200.0, 2.5, seed=6).astype(np.float64)
        pad_c, time_c = moments(s, PAD)[0], moments(s, TIME)[0]
        pads, times = np.arange(8)[None, :, None], np.arange(16)[None, None, :]
        covariance = (s * (pads - pad_c[:, None, None]) * (times - time_c[:, None, None])).sum(
            axis=(1, 2)) / s.sum(axis=(1, 2))
        tilts.append(covariance.mean())
    assert tilts[0] < -0.05 < 0.05 < tilts[1]


def test_bad_conditions_name_the_problem(tpc):
    with pytest.raises(ConditionError, match=r"expected \(N, 4\)"):
        tpc.simulate_at(np.ones((4, 3)))
    good = np.tile(np.array([[0.0, 0.2, 500.0, 2.0]]), (5, 1))
    bad = good.copy()
    bad[3, 0] = np.inf
    with pytest.raises(ConditionError, match="row 3"):
        tpc.simulate_at(bad)
    bad = good.copy()
    bad[2, 2] = -5.0
    with pytest.raises(ConditionError, match="row 2.*drift_length"):
        tpc.simulate_at(bad)
    bad = good.copy()
    bad[1, 1] = 2.0
    with pytest.raises(ConditionError, match="row 1.*dip_angle"):
        tpc.simulate_at(bad)
    with pytest.raises(ConditionError, match="outside the simulated range"):
        tpc.check_conditions([[0.0, 0.0, 2500.0, 1.0]], check_range=True)
