"""An auto-regressive chain of conditional WGAN-GPs with one-dimensional outputs (seed 000).

The DarkSide-20k seed factorizes the joint response of a LAr TPC with the chain rule,

    p(S1, S2, f200 | E, type) = p(f200 | S1, S2, E, type) p(S2 | S1, E, type) p(S1 | E, type),

and learns each factor with its own conditional GAN ("a chain of GANs with 1D output, but
increasing complex inputs"). Here link i is a :class:`~ddsim_gan.models.gan.ConditionalGAN`
whose conditions are the detector's conditions followed by the outputs of the links before it:

* the detector conditions are encoded as for any GAN of the package (one-hot categories, log
  and standardization of energies); the previous outputs per link either through the quantile
  columns of the :class:`~ddsim_gan.data.preprocessing.ConditionEncoder` (``"quantile"``:
  heavy tails, point masses, and near zero a log-like stretch) or standardized
  (``"standardize"``: linear in physical units). The choice matters because the standardization
  below is linear in these columns: DarkSide's S2 depends linearly on S1 at fixed energy
  (electrons and photons share the quanta), so Gaussianized S1 bends that line at the top of the
  S1 range (``docs/darkside_argan.md``);
* the link's output x goes through a
  :class:`~ddsim_gan.data.preprocessing.ConditionalStandardize`: centred and scaled by a linear
  model of the encoded conditions, r = (x - m(c)) / s(c) (``space="linear"``, the default; or
  of the :class:`~ddsim_gan.data.preprocessing.QuantileTransform` of its marginal, Q(x), with
  ``space="quantile"``), so the GAN learns a distribution of unit width at every condition. In
  the marginal's Gaussian units alone the conditional distributions are a few percent of the
  range wide, and a GAN gets their widths 20-40 % wrong; and Q bends them where the marginal
  density changes fast, which skews r (see the layer's docstring);
* the GAN sees r linearly (a :class:`~ddsim_gan.data.preprocessing.Standardize`), so a
  generator that leaks mass into the far tails pays for it in proportion to the distance;
* each link is trained on the *real* previous values (teacher forcing: the factor
  p(x_i | x_<i, c) is a conditional density of the data whatever the other links do), so the
  links train independently;
* sampling runs in order, each link conditioned on what the links before it generated.

A link may generate several columns at once: ``groups=[(0, 1, 2)]`` is a single conditional GAN
on all outputs (the baseline the chain is compared with; for the LHCb RICH, a GAN on the five
DLLs standardized at their conditions), trained and exported the same way. An optional
``constraint`` layer ``[samples, conditions] -> samples`` imposes what the detector guarantees on
the assembled physical samples (e.g. :class:`~ddsim_gan.models.heads.ThresholdTies`).

:attr:`AutoregressiveChain.sampler` assembles the whole chain as one functional Keras model
``[conditions (N, c), noise (N, sum of the links' latent dims)] -> samples (N, k)`` in physical
units: :class:`NoiseSlice` cuts the noise into one slice per link, the link samplers are nested
models, and each link's standardization is inverted in the graph. Saved as ``generator.keras``
it exports through the package's standard path as one SavedModel taking the detector's
conditions and a seed, and it loads under any Keras backend (Keras layers and ``keras.ops``
only).
"""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
from keras import layers

from ..data.preprocessing import ConditionalStandardize, ConditionEncoder

_PACKAGE = "ddsim_gan"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class NoiseSlice(keras.layers.Layer):
    """Columns ``start:stop`` of a ``[N, width]`` tensor: one link's share of the chain's noise."""

    def __init__(self, start, stop, **kwargs):
        super().__init__(**kwargs)
        self.start, self.stop = int(start), int(stop)
        if not 0 <= self.start < self.stop:
            raise ValueError(f"NoiseSlice: need 0 <= start < stop, got {self.start}:{self.stop}")

    def call(self, noise):
        return noise[:, self.start:self.stop]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.stop - self.start)

    def get_config(self):
        return {**super().get_config(), "start": self.start, "stop": self.stop}


PREVIOUS_ENCODINGS = ("quantile", "standardize")


def link_encoder(n_categories, log, n_previous, n_quantiles=500, name="condition_encoder",
                 previous="quantile"):
    """Condition encoder of a link: the detector's columns as given, then ``n_previous``
    columns for the outputs of the links before it, Gaussianized (``previous="quantile"``) or
    standardized (``"standardize"``)."""
    if previous not in PREVIOUS_ENCODINGS:
        raise ValueError(f"previous outputs are encoded by one of {PREVIOUS_ENCODINGS}, got "
                         f"{previous!r}")
    n_categories = list(n_categories)
    return ConditionEncoder(n_categories + [0] * n_previous, list(log) + [False] * n_previous,
                            quantile=[False] * len(n_categories)
                            + [previous == "quantile"] * n_previous,
                            n_quantiles=n_quantiles, name=name, dtype="float32")


def _columns(conditions, samples, start, stop):
    conditions = np.asarray(conditions, np.float32)
    samples = np.asarray(samples, np.float32).reshape(len(samples), -1)
    if len(conditions) != len(samples):
        raise ValueError(f"{len(conditions)} conditions but {len(samples)} samples")
    if not 0 <= start < stop <= samples.shape[1]:
        raise ValueError(f"columns {start}:{stop} of samples with {samples.shape[1]} columns")
    return (np.concatenate([conditions, samples[:, :start]], axis=1),
            samples[:, start:stop])


class AutoregressiveChain:
    """Links sampled in order, each a ConditionalGAN on standardized outputs (module docstring).

    Args:
        links: :class:`~ddsim_gan.models.gan.ConditionalGAN` per link, in sampling order; link i
            takes the detector's conditions and every column generated before it, and generates
            the standardized columns r of its group.
        standardizers: per link, the fitted
            :class:`~ddsim_gan.data.preprocessing.ConditionalStandardize` that maps its physical
            columns to r, applied to the output of the link's ``condition_encoder``.
        output_names: per link, a name (``"S1"``; ``"S1_S2_f200"`` for a link of three columns).
        constraint: optional layer ``[samples (N, k), conditions (N, c)] -> samples`` applied
            to the assembled physical samples (named ``"constraint"`` in the sampler).
    """

    def __init__(self, links, standardizers, output_names=None, constraint=None):
        self.links = list(links)
        self.standardizers = list(standardizers)
        if not self.links or len(self.links) != len(self.standardizers):
            raise ValueError(f"a chain needs at least one link and one standardizer per link; "
                             f"got {len(self.links)} links, {len(self.standardizers)} "
                             "standardizers")
        self.output_names = tuple(output_names or (f"x{i}" for i in range(len(self.links))))
        if len(self.output_names) != len(self.links):
            raise ValueError(f"{len(self.links)} links but {len(self.output_names)} output names")
        self.n_conditions = self.links[0].condition_encoder.n_inputs
        self.widths = []
        for i, (link, standardizer, name) in enumerate(
                zip(self.links, self.standardizers, self.output_names)):
            shape = tuple(link.sampler.outputs[0].shape[1:])
            if len(shape) != 1 or shape[0] != standardizer.n_features:
                raise ValueError(f"link {i} ({name!r}) generates shape {shape}; its "
                                 f"standardizer has {standardizer.n_features} columns")
            expected = self.n_conditions + sum(self.widths)
            if link.condition_encoder.n_inputs != expected:
                raise ValueError(f"link {i} ({name!r}) takes {link.condition_encoder.n_inputs} "
                                 f"conditions, expected {self.n_conditions} detector conditions "
                                 f"+ {sum(self.widths)} previous outputs")
            self.widths.append(shape[0])
        if constraint is not None and constraint.name != "constraint":
            raise ValueError(f"name the output constraint 'constraint' (got {constraint.name!r}): "
                             "load() finds it in the saved sampler by that name")
        self.constraint = constraint
        self._sampler = None

    # ---- building ---------------------------------------------------------------------------
    @classmethod
    def for_detector(cls, detector, train_conditions, train_samples, *, groups=None,
                     latent_dim=8, n_knots=24, n_quantiles=1000, space="linear", seed=0,
                     previous="quantile", constraint=None, additive_conditions=(),
                     n_additive_knots=8, **gan_options):
        """Links for a vector detector: by default one per output (the auto-regressive chain);
        ``groups`` lists consecutive output columns per link, e.g. ``[(0, 1, 2)]`` for a single
        GAN on all outputs. ``previous`` is how each link encodes the outputs before it (one
        of :data:`PREVIOUS_ENCODINGS` for every link, or one per link). Encoders and
        standardizers are fitted on the real previous outputs of ``train_samples``;
        ``additive_conditions`` (detector condition indices) get an additive piecewise-linear
        term of ``n_additive_knots`` knots in every standardizer.
        ``constraint`` is passed to the chain; ``gan_options`` go to every
        :func:`~ddsim_gan.models.builders.build_vector_gan` (hidden widths, critic steps...)."""
        from .builders import build_vector_gan

        if detector.axes is not None or len(detector.sample_shape) != 1:
            raise ValueError(f"an auto-regressive chain needs vector outputs; detector "
                             f"{detector.name!r} has samples of shape {detector.sample_shape}")
        n_outputs = detector.sample_shape[0]
        groups = [tuple(g) for g in (groups or [(i,) for i in range(n_outputs)])]
        flat = [i for g in groups for i in g]
        if flat != list(range(n_outputs)):
            raise ValueError(f"groups {groups} must list the {n_outputs} output columns once, "
                             "in order")
        names = detector.sample_names or tuple(f"x{i}" for i in range(n_outputs))
        previous = [previous] * len(groups) if isinstance(previous, str) else list(previous)
        if len(previous) != len(groups):
            raise ValueError(f"{len(groups)} links but {len(previous)} encodings of their "
                             f"previous outputs: {previous}")
        gan_options.setdefault("sample_transform", "standardize")
        template = ConditionEncoder.for_detector(detector)
        links, standardizers, link_names = [], [], []
        for i, group in enumerate(groups):
            name = "_".join(names[j] for j in group)
            conditions, samples = _columns(train_conditions, train_samples, group[0],
                                           group[-1] + 1)
            encoder = link_encoder(template.n_categories, template.log, group[0],
                                   name=f"condition_encoder_{name}",
                                   previous=previous[i]).adapt(conditions)
            standardizer = ConditionalStandardize.for_encoder(
                encoder, len(group), n_knots=n_knots, n_quantiles=n_quantiles, space=space,
                additive_conditions=additive_conditions, n_additive_knots=n_additive_knots,
                name=f"standardize_{name}", dtype="float32")
            encoded = keras.ops.convert_to_numpy(encoder(conditions))
            standardizer.adapt(samples, encoded)
            residual = keras.ops.convert_to_numpy(standardizer([samples, encoded]))
            links.append(build_vector_gan(encoder, conditions, residual, latent_dim=latent_dim,
                                          n_quantiles=n_quantiles, seed=seed + i,
                                          name=f"link_{name}", **gan_options))
            standardizers.append(standardizer)
            link_names.append(name)
        return cls(links, standardizers, link_names, constraint=constraint)

    def link_data(self, conditions, samples, index):
        """Training pairs of link ``index`` on real data (teacher forcing): its conditions (the
        detector's, then the real columns before it) and its standardized target columns r."""
        start = sum(self.widths[:index])
        link_conditions, target = _columns(conditions, samples, start,
                                           start + self.widths[index])
        encoded = self.links[index].condition_encoder(link_conditions)
        residual = self.standardizers[index]([target, encoded])
        return link_conditions, keras.ops.convert_to_numpy(residual)

    # ---- sampling ---------------------------------------------------------------------------
    @property
    def latent_dims(self) -> tuple[int, ...]:
        return tuple(link.latent_dim for link in self.links)

    @property
    def latent_dim(self) -> int:
        """Width of the chain's noise input: the links' noise side by side."""
        return sum(self.latent_dims)

    @property
    def sampler(self) -> keras.Model:
        """``[conditions, noise] -> [N, k]`` physical samples, the links run in order."""
        if self._sampler is None:
            self._sampler = self._build_sampler()
        return self._sampler

    def _build_sampler(self):
        conditions = keras.Input((self.n_conditions,), name="conditions")
        noise = keras.Input((self.latent_dim,), name="noise")
        outputs, start = [], 0
        for link, standardizer, name, width in zip(self.links, self.standardizers,
                                                   self.output_names, self.latent_dims):
            link_noise = NoiseSlice(start, start + width, name=f"noise_{name}")(noise)
            start += width
            link_conditions = (conditions if not outputs else layers.Concatenate(
                name=f"conditions_{name}")([conditions, *outputs]))
            outputs.append(self._link_model(link, standardizer, name)(
                [link_conditions, link_noise]))
        samples = (outputs[0] if len(outputs) == 1
                   else layers.Concatenate(name="samples", dtype="float32")(outputs))
        if self.constraint is not None:
            samples = self.constraint([samples, conditions])
        return keras.Model([conditions, noise], samples, name="chain_sampler")

    @staticmethod
    def _link_model(link, standardizer, name):
        """``[link conditions, link noise] -> physical columns`` of one link: its sampler's
        layers (same weights) followed by the inverse standardization, as one nested model (a
        layer shared between the nested and the outer graph would not survive saving)."""
        conditions = keras.Input((link.condition_encoder.n_inputs,), name="conditions")
        noise = keras.Input((link.latent_dim,), name="noise")
        encoded = link.condition_encoder(conditions)
        residual = link._physical(link.generator([noise, encoded]), conditions)
        physical = standardizer([residual, encoded], inverse=True)
        return keras.Model([conditions, noise], physical, name=f"link_{name}")

    def generate(self, conditions, seed=0, batch_size=16384):
        """Physical samples ``[N, k]`` for physical ``conditions`` (NumPy in and out),
        reproducible per ``seed``."""
        conditions = np.asarray(conditions, np.float32)
        rng = np.random.default_rng(seed)
        noise = rng.standard_normal((len(conditions), self.latent_dim)).astype(np.float32)
        return self.sampler.predict([conditions, noise], batch_size=batch_size, verbose=0)

    # ---- saving -------------------------------------------------------------------------------
    def save(self, directory) -> Path:
        """Write ``link_<name>.keras`` (each whole GAN with its optimizers, to continue
        training), ``chain.json`` and ``generator.keras`` (the assembled sampler, which also
        carries the standardizers) into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for link, name in zip(self.links, self.output_names):
            link.save(directory / f"link_{name}.keras")
        (directory / "chain.json").write_text(json.dumps(
            {"output_names": list(self.output_names)}, indent=1))
        self.sampler.save(directory / "generator.keras")
        return directory

    @classmethod
    def load(cls, directory):
        """The chain :meth:`save` wrote."""
        from . import gan as _gan  # noqa: F401  (registers ConditionalGAN for loading)

        directory = Path(directory)
        info_path = directory / "chain.json"
        if not info_path.is_file():
            raise FileNotFoundError(f"{directory}: no chain.json; not a saved auto-regressive "
                                    "chain")
        names = json.loads(info_path.read_text())["output_names"]
        links = []
        for name in names:
            path = directory / f"link_{name}.keras"
            if not path.is_file():
                raise FileNotFoundError(f"{directory}: chain.json names link {name!r} but "
                                        f"{path.name} is missing")
            links.append(keras.saving.load_model(path))
        sampler = keras.saving.load_model(directory / "generator.keras")
        standardizers = [sampler.get_layer(f"link_{name}").get_layer(f"standardize_{name}")
                         for name in names]
        constraint = next((layer for layer in sampler.layers if layer.name == "constraint"),
                          None)
        return cls(links, standardizers, names, constraint=constraint)

    def __repr__(self):
        return (f"<AutoregressiveChain {' -> '.join(self.output_names)}, "
                f"latent {self.latent_dims}>")
