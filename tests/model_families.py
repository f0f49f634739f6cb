"""Every kind of GAN the recipes train, built by the recipes' own code at toy width.

Issue 5 asks that distribution and mixed precision hold "for every GAN in the package, not only
one": each entry of :data:`FAMILIES` builds one recipe's model (the same builder, penalties,
heads and encoders; hidden layers a few units wide) on a few dozen reference events, and returns
a :class:`Family` with what a training loop needs. Used by ``test_model_families.py`` and by the
2-replica script it runs in a subprocess.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
N_EVENTS = 64


def script_module(path, name):
    """The script at ``path`` (a recipe or a tool) imported as module ``name``."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def recipe_module(name):
    """The recipe script ``recipes/<name>.py`` as a module (its constants and builders)."""
    return script_module(RECIPES / f"{name}.py", f"recipe_{name}")


@dataclass
class Family:
    """One recipe's GAN and a small training set for it."""

    gan: object
    conditions: np.ndarray
    samples: np.ndarray
    batch_map: object = None
    extra_optimizers: tuple = field(default_factory=tuple)   # compile() keywords beyond the two


def _data(detector, seed):
    conditions, samples = detector.simulate(N_EVENTS, seed=seed)
    return SimpleNamespace(train_conditions=conditions, train_samples=samples)


def darkshine(seed=0):
    from ddsim_gan import detectors
    from ddsim_gan.models.builders import build_conditional_gan
    from ddsim_gan.models.penalties import NNLSPenalty

    module = recipe_module("darkshine_nnls_cgan")
    detector = detectors.get("darkshine")
    data = _data(detector, seed)
    penalty = NNLSPenalty(module.NNLS_CONDITION_EDGES, module.OBSERVABLE_EDGES[::2], weight=1.0,
                          bandwidth=0.5)
    gan = build_conditional_gan(detector, data.train_conditions, data.train_samples,
                                energy_condition="E_total", extra_penalties=[penalty],
                                architecture="components", noise_sigma=0.25, photostat=0.05,
                                exact_energy=True, latent_dim=8, generator_hidden=(16,),
                                critic_hidden=(16,), layer_code=8, seed=seed)
    return Family(gan, data.train_conditions, data.train_samples)


def darkside_link(seed=0):
    """The second link of the DarkSide chain, p(S2 | S1, E, type), on real S1."""
    from ddsim_gan import detectors
    from ddsim_gan.models.chain import AutoregressiveChain

    module = recipe_module("darkside_argan")
    detector = detectors.get("darkside")
    data = _data(detector, seed)
    options = {**module.GAN_ARCHITECTURE, "generator_hidden": (16,), "critic_hidden": (16,),
               "n_quantiles": 32}
    chain = AutoregressiveChain.for_detector(detector, data.train_conditions, data.train_samples,
                                             seed=seed, **options)
    conditions, target = chain.link_data(data.train_conditions, data.train_samples, 1)
    return Family(chain.links[1], conditions, target)


def lhcb_rich(seed=0):
    from ddsim_gan import detectors
    from ddsim_gan.data.preprocessing import ConditionEncoder
    from ddsim_gan.models.builders import build_vector_gan
    from ddsim_gan.models.heads import ThresholdTieHead

    module = recipe_module("lhcb_rich_gan")
    detector = detectors.get("lhcb_rich")
    data = _data(detector, seed)
    continuous = [not c.is_categorical for c in detector.conditions]
    encoder = ConditionEncoder.for_detector(detector, quantile=continuous,
                                            name="condition_encoder", dtype="float32")
    head = ThresholdTieHead(len(detector.sample_names), module.threshold_ties(detector),
                            name="threshold_ties", dtype="float32")
    head.adapt(data.train_samples)
    options = {**module.ARCHITECTURE, "generator_hidden": (16,), "critic_hidden": (16,)}
    gan = build_vector_gan(encoder, data.train_conditions, data.train_samples, seed=seed,
                           n_quantiles=32, output_head=head, **options)
    return Family(gan, data.train_conditions, data.train_samples)


def luxe_region(seed=0):
    """The outer region's GAN of the LUXE split (its RegionHead keeps r >= the inner radius)."""
    from ddsim_gan import detectors
    from ddsim_gan.models.regions import build_region_gan, radius

    module = recipe_module("luxe_split_wgan")
    detector = detectors.get("luxe_dump")
    conditions, samples = detector.simulate(8 * N_EVENTS, seed=seed)
    _, r_min, r_max, _, _ = module.region_plan(detector)[1]
    rows = radius(samples) >= r_min
    options = {**module.ARCHITECTURE, "generator_hidden": (16,), "critic_hidden": (16,)}
    gan = build_region_gan(detector, conditions[rows][:N_EVENTS], samples[rows][:N_EVENTS],
                           r_min=r_min, r_max=r_max, n_quantiles=32, seed=seed, **options)
    return Family(gan, conditions[rows][:N_EVENTS], samples[rows][:N_EVENTS])


def siw_ecal(seed=0, model="conservation"):
    from ddsim_gan import detectors

    module = recipe_module("siw_ecal_wgangp")
    detector = detectors.get("siw_ecal")
    data = _data(detector, seed)
    gan = module.build_model(model, detector, data, hidden=8, seed=seed)
    return Family(gan, data.train_conditions, data.train_samples)


def lhcb_ecal(seed=0):
    import keras

    from ddsim_gan import detectors
    from ddsim_gan.models.auxiliary import metric_batch_map

    module = recipe_module("lhcb_ecal_aux_gan")
    detector = detectors.get("lhcb_ecal")
    data = _data(detector, seed)
    targets = detector.asymmetry(data.train_samples, data.train_conditions)
    gan = module.build_model(detector, data, targets, regressor=True, hidden=8, seed=seed)
    batch_map = metric_batch_map(detector.asymmetry, detector.n_conditions,
                                 detector.sample_shape)
    return Family(gan, data.train_conditions, data.train_samples, batch_map,
                  (("regressor_optimizer", lambda: keras.optimizers.Adam(1e-3)),))


def mpd_tpc(seed=0):
    from ddsim_gan import detectors

    module = recipe_module("mpd_tpc_gan")
    detector = detectors.get("mpd_tpc")
    data = _data(detector, seed)
    gan = module.build_model(detector, data, hidden=8, seed=seed)
    return Family(gan, data.train_conditions, data.train_samples)


#: recipe -> builder of its model (the DarkSide chain and LUXE split train ConditionalGAN links
#: and regions one at a time: one of each stands for them)
FAMILIES = {
    "darkshine_nnls_cgan": darkshine,
    "darkside_argan": darkside_link,
    "lhcb_rich_gan": lhcb_rich,
    "luxe_split_wgan": luxe_region,
    "siw_ecal_wgangp": siw_ecal,
    "siw_ecal_wgangp_conv3d": lambda seed=0: siw_ecal(seed, model="conv3d"),
    "lhcb_ecal_aux_gan": lhcb_ecal,
    "mpd_tpc_gan": mpd_tpc,
}

#: the SiW conv3d variant trains with the dense variant's train_step and penalties: the replica
#: arithmetic is the same, and its convolutions triple the 2-replica run's time
REPLICA_FAMILIES = [name for name in FAMILIES if name != "siw_ecal_wgangp_conv3d"]


def optimizers(family, learning_rate=1e-2):
    """A fresh optimizer per network (the two of every GAN, plus any auxiliary one)."""
    import keras

    made = {"generator_optimizer": keras.optimizers.Adam(learning_rate),
            "critic_optimizer": keras.optimizers.Adam(learning_rate)}
    made.update({name: make() for name, make in family.extra_optimizers})
    return made


def dataset(family, batch_size):
    """The family's events, in order, batched and mapped as its recipe maps them."""
    from ddsim_gan.data import dataset_from_arrays

    data = dataset_from_arrays(family.conditions, family.samples, batch_size, shuffle=False,
                               repeat=True)
    return data if family.batch_map is None else data.map(family.batch_map)
