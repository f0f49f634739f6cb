"""RingTiesHead: the RICH hypotheses without a Cherenkov ring, imposed from P and eta."""

import sys

import numpy as np
import pytest

from conftest import ROOT
from ddsim_gan.models.heads import QuantileHead, RingTiesHead

# e, mu, K, p tied to the below-threshold column 4; thresholds (GeV/c) in C4F10 and CF4; the
# acceptances are exactly zero at or beyond these eta
RICH = dict(hypotheses=[(0, [0.01, 0.02]), (1, [2.0, 3.3]), (2, [9.3, 15.6]), (3, [17.7, 29.7])],
            below_column=4, pion_thresholds=[2.6, 4.4], acceptance=[(1.8, 4.5), (2.7, 5.0)])


def _rich_recipe():
    sys.path.insert(0, str(ROOT / "recipes"))
    try:
        import lhcb_rich_gan
    finally:
        sys.path.remove(str(ROOT / "recipes"))
    return lhcb_rich_gan


@pytest.mark.parametrize("momentum,eta,expected", [
    # below the pion's thresholds: RichDLLbt = 0, K and p (no ring either) tie to it; e, mu free
    (2.3, 3.0, [1.0, 2.0, 0.0, 0.0, 0.0]),
    # RICH1 blind at eta 4.7, K and p below their CF4 thresholds: both tie to RichDLLbt
    (12.0, 4.7, [1.0, 2.0, 5.0, 5.0, 5.0]),
    # both radiators see eta 3: the kaon rings in C4F10, the proton does not
    (12.0, 3.0, [1.0, 2.0, 3.0, 5.0, 5.0]),
    # RICH1 blind, the pion and muon below their CF4 thresholds: RichDLLbt = RichDLLmu = 0
    (3.0, 4.7, [1.0, 0.0, 0.0, 0.0, 0.0]),
    # beyond both acceptances: every DLL is 0
    (80.0, 5.2, [0.0, 0.0, 0.0, 0.0, 0.0]),
    # far above every threshold inside both: nothing imposed
    (80.0, 3.5, [1.0, 2.0, 3.0, 4.0, 5.0]),
])
def test_ties_and_zeros_follow_the_rings(momentum, eta, expected):
    head = RingTiesHead(5, **RICH)
    samples = np.array([[1.0, 2.0, 3.0, 4.0, 5.0]], np.float32)
    conditions = np.array([[momentum, eta, 300.0, 2.0]], np.float32)
    np.testing.assert_array_equal(np.asarray(head.constrain(samples, conditions))[0], expected)


def test_the_reference_simulator_obeys_the_rule_exactly():
    """The recipe's rule, built from the simulator's radiators, leaves its DLLs unchanged; the
    momentum-only ties of the head before miss some (RICH1 blind, K below its CF4 threshold)."""
    from ddsim_gan import detectors

    recipe = _rich_recipe()
    detector = detectors.get("lhcb_rich")
    conditions, samples = recipe.balanced_tracks(detector, 20_000, 5)
    head = RingTiesHead(5, **recipe.ring_ties(detector))
    np.testing.assert_array_equal(np.asarray(head.constrain(samples, conditions)), samples)
    imposed = np.asarray(head.constrain(np.ones_like(samples), conditions)) != 1.0
    assert imposed[:, 4].mean() > 0.05                  # RichDLLbt = 0 below the pion's rings
    assert (samples[imposed[:, 4], 4] == 0).all()
    kaon_ties = head.no_ring(head.hypotheses[2][1], conditions, np)
    assert (kaon_ties & (conditions[:, 0] > 9.33)).any()    # beyond the momentum-only ties


def test_tables_leave_out_the_imposed_values():
    rng = np.random.default_rng(0)
    n = 20_000
    conditions = np.stack([np.exp(rng.uniform(np.log(2.0), np.log(150.0), n)),
                           rng.uniform(1.8, 4.4, n), np.full(n, 300.0),
                           rng.integers(0, 5, n).astype(float)], axis=1).astype(np.float32)
    samples = rng.normal(5.0, 1.0, (n, 5)).astype(np.float32)
    head = RingTiesHead(5, **RICH, category_index=3, n_categories=5)
    samples = np.asarray(head.constrain(samples, conditions))
    assert (samples[:, 4] == 0).mean() > 0.03
    head.adapt(samples, conditions)
    plain = QuantileHead(5, category_index=3, n_categories=5).adapt(samples, conditions)
    for ring_table, plain_table in zip(head.category_quantiles, plain.category_quantiles):
        assert np.asarray(ring_table.quantiles)[:, 4].min() > 0.5      # no point mass at 0
        assert np.asarray(plain_table.quantiles)[:, 4].min() == 0.0


def test_a_hypothesis_needs_a_threshold_per_radiator():
    with pytest.raises(ValueError, match="one threshold per radiator"):
        RingTiesHead(5, **{**RICH, "pion_thresholds": [2.6]})
    with pytest.raises(ValueError, match="distinct"):
        RingTiesHead(5, **{**RICH, "below_column": 3})
