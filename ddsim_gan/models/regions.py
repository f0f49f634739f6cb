"""Split learning (seed 004, LUXE): one conditional GAN per region of the plane, mixed at sampling.

The seed trains a WGAN on the particles crossing a sampling surface and finds the sharp features
of the dense core hard to learn together with the sparse halo. Its remedy is *split learning*:
divide the plane at a radius r = sqrt(x^2 + y^2) into an inner and an outer region, train one
model per region, and "train with (r, x, y), generate only (x, y)". Here:

* :class:`RadialQuantileTransform` is the critic's view of a particle: the physical columns
  plus the derived radius r, each Gaussianized through its empirical CDF (the seed's quantile
  transformation). Real particles and generated ones pass through it alike, so the critic
  compares the r distribution of what the generator makes with the real one, although r is
  never generated;
* :class:`RegionHead` is the generator's output head: it maps the generator's Gaussian numbers
  back to physical units (x, y, p, ...) and keeps (x, y) inside the region's annulus
  ``[r_min, r_max)`` by a smooth radial map that is the identity except in a thin band at the
  border (so every generated particle lies in its region and the mixture reproduces the region
  fractions exactly, while gradients still flow everywhere);
* :class:`RegionMixture` picks, per row, which region's sample to return: the region is drawn
  from the reference proportions P(region | category) (e.g. per particle species) with one extra
  noise column, so the whole mixture is a pure function of (conditions, noise) and a seed
  reproduces it;
* :class:`RegionSplit` holds the region GANs and the proportions and assembles
  :attr:`RegionSplit.sampler`, ONE functional Keras model ``[conditions (N, c), noise (N,
  latent + 1)] -> samples (N, k)`` in physical units, the region samplers nested in it. Saved as
  ``generator.keras`` it goes through the package's standard SavedModel export, and, being built
  from registered layers that use ``keras.ops`` only, it loads under the JAX backend too.

Every region sampler runs on every row and :class:`RegionMixture` keeps one of them: twice the
arithmetic of a single model, but no data-dependent shapes, which XLA, TF Serving and every
backend handle alike.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from statistics import NormalDist

import keras
import numpy as np
from keras import ops

from ..data.preprocessing import InvertibleTransform, QuantileTransform
from .chain import NoiseSlice
from .heads import QuantileHead

_PACKAGE = "ddsim_gan"
_TINY = 1e-6  # mm: below this a radius has no direction


def radius(samples, x_index=0, y_index=1) -> np.ndarray:
    """r = sqrt(x^2 + y^2) of ``[n, k]`` NumPy samples, in float64."""
    samples = np.asarray(samples, np.float64)
    return np.hypot(samples[:, x_index], samples[:, y_index])


def _tensor_radius(x, x_index, y_index):
    return ops.sqrt(ops.square(x[:, x_index]) + ops.square(x[:, y_index]) + _TINY ** 2)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class RadialQuantileTransform(InvertibleTransform):
    """Physical ``[N, n]`` -> Gaussianized ``[N, n + 1]``: the n columns and r appended last.

    ``forward`` computes r = sqrt(x^2 + y^2) from the columns ``x_index``, ``y_index`` and
    Gaussianizes all n + 1 columns with one :class:`QuantileTransform` (adapted by
    :meth:`adapt` on physical samples). ``inverse`` drops r (an ``[N, n]`` input is taken as
    the n generated columns) and maps the rest back to physical units.
    """

    def __init__(self, n_features=6, x_index=0, y_index=1, n_quantiles=1000, epsilon=1e-4,
                 **kwargs):
        super().__init__(**kwargs)
        self.n_features = int(n_features)
        self.x_index, self.y_index = int(x_index), int(y_index)
        self.n_quantiles = int(n_quantiles)
        self.epsilon = float(epsilon)
        self.quantiles = QuantileTransform(self.n_features + 1, self.n_quantiles, self.epsilon,
                                           name="quantiles", dtype=self.dtype_policy)

    @property
    def output_width(self) -> int:
        return self.n_features + 1

    def build(self, input_shape):
        # the quantile table is created in __init__; nothing depends on the input shape
        if not self.quantiles.built:
            self.quantiles.build(None)
        self.built = True

    def adapt(self, samples):
        samples = np.asarray(samples, np.float64).reshape(len(samples), self.n_features)
        self.quantiles.adapt(np.concatenate(
            [samples, radius(samples, self.x_index, self.y_index)[:, None]], axis=1))
        return self

    def forward(self, x):
        r = _tensor_radius(x, self.x_index, self.y_index)
        return self.quantiles(ops.concatenate([x, r[:, None]], axis=1))

    def inverse(self, y):
        if y.shape[-1] == self.n_features:
            y = ops.concatenate([y, ops.zeros_like(y[:, :1])], axis=1)
        return self.quantiles(y, inverse=True)[:, :self.n_features]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.output_width)

    def get_config(self):
        return {**super().get_config(), "n_features": self.n_features,
                "x_index": self.x_index, "y_index": self.y_index,
                "n_quantiles": self.n_quantiles, "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class RegionHead(QuantileHead):
    """Generator output head: ``[raw (N, n) Gaussian numbers, conditions] -> physical (N, n)``
    with r = sqrt(x^2 + y^2) inside ``[r_min, r_max)``.

    The raw numbers go through the inverse of a quantile transform of the n physical columns
    (:class:`~ddsim_gan.models.heads.QuantileHead`, adapted by :meth:`adapt`), then (x, y) are
    moved along their radius by

        r' = r                                             inside [r_min + w_in, r_max - w_out]
        r' = r_max - w_out + w_out tanh((r - r_max + w_out) / w_out)   above (-> r' < r_max)
        r' = r_min + w_in - w_in tanh((r_min + w_in - r) / w_in)       below (-> r' > r_min)

    with band widths ``w = margin * r_max`` (``margin * r_min`` at the inner border): smooth,
    monotone, the identity over most of the region and never leaving it. ``r_min = 0`` and
    ``r_max = None`` (no bound) make the head a plain inverse quantile transform.
    """

    def __init__(self, n_features=6, x_index=0, y_index=1, r_min=0.0, r_max=None, margin=0.1,
                 n_quantiles=1000, epsilon=1e-4, **kwargs):
        super().__init__(n_features, n_quantiles, epsilon, **kwargs)
        self.x_index, self.y_index = int(x_index), int(y_index)
        self.r_min = float(r_min)
        self.r_max = None if r_max is None or not math.isfinite(r_max) else float(r_max)
        if self.r_max is not None and self.r_max <= self.r_min:
            raise ValueError(f"RegionHead: r_max = {self.r_max} must exceed r_min = {self.r_min}")
        if not 0.0 < float(margin) < 0.5:
            raise ValueError(f"RegionHead: margin = {margin}, expected a fraction in (0, 0.5)")
        self.margin = float(margin)

    def _bounded_radius(self, r):
        out = r
        if self.r_max is not None:
            # float32 rounding must not put r' on the border itself: aim slightly inside
            top = self.r_max * (1.0 - 1e-5)
            width = self.margin * top
            start = top - width
            out = ops.where(out > start, start + width * ops.tanh((out - start) / width), out)
        if self.r_min > 0:
            bottom = self.r_min * (1.0 + 1e-5)
            width = self.margin * bottom
            end = bottom + width
            out = ops.where(out < end, end - width * ops.tanh((end - out) / width), out)
        return out

    def constrain(self, samples, conditions):
        if self.r_max is None and self.r_min <= 0:
            return samples
        r = _tensor_radius(samples, self.x_index, self.y_index)
        scale = self._bounded_radius(r) / r
        columns = [samples[:, j] * scale if j in (self.x_index, self.y_index) else samples[:, j]
                   for j in range(self.n_features)]
        return ops.stack(columns, axis=1)

    def get_config(self):
        return {**super().get_config(), "x_index": self.x_index, "y_index": self.y_index,
                "r_min": self.r_min, "r_max": self.r_max, "margin": self.margin}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class RegionMixture(keras.layers.Layer):
    """``[conditions, noise, sample_0, ..., sample_{k-1}] -> sample`` of one region per row.

    Region j is chosen with probability ``fractions[c][j]``, c the (rounded) category in column
    ``category_index`` of the conditions (``None``: one row of fractions for every event), by
    u = Phi(noise[:, -1]) against the cumulative fractions: the choice is a deterministic
    function of the noise, so a seed reproduces it.
    """

    def __init__(self, fractions, category_index=0, **kwargs):
        super().__init__(**kwargs)
        fractions = np.asarray(fractions, np.float64)
        if fractions.ndim == 1:
            fractions = fractions[None, :]
        if fractions.ndim != 2 or fractions.shape[1] < 1 or (fractions < 0).any():
            raise ValueError(f"RegionMixture: fractions must be [categories, regions] and >= 0, "
                             f"got {fractions.tolist()}")
        sums = fractions.sum(axis=1, keepdims=True)
        if (sums <= 0).any():
            raise ValueError(f"RegionMixture: a category has no region: {fractions.tolist()}")
        self.fractions = (fractions / sums).tolist()
        self.category_index = None if category_index is None else int(category_index)

    @property
    def n_regions(self) -> int:
        return len(self.fractions[0])

    def call(self, inputs):
        conditions, noise, *samples = inputs
        if len(samples) != self.n_regions:
            raise ValueError(f"RegionMixture: {len(samples)} region samples for "
                             f"{self.n_regions} regions")
        u = 0.5 * (1.0 + ops.erf(ops.cast(noise[:, -1], "float32") / math.sqrt(2.0)))
        borders = np.cumsum(self.fractions, axis=1)[:, :-1]
        # a border at the total (the regions after it are empty) is never crossed, even by the
        # u = 1.0 that float32 rounds Phi(noise > 5.4) to
        borders = np.where(borders >= 1.0 - 1e-9, 2.0, borders)
        cumulative = ops.convert_to_tensor(borders, dtype="float32")
        if self.category_index is None:
            borders = ops.broadcast_to(cumulative[:1], (ops.shape(u)[0], self.n_regions - 1))
        else:
            category = ops.cast(ops.round(conditions[:, self.category_index]), "int32")
            category = ops.clip(category, 0, len(self.fractions) - 1)
            borders = ops.take(cumulative, category, axis=0)
        region = ops.sum(ops.cast(u[:, None] >= borders, "int32"), axis=1)
        out = ops.cast(samples[0], "float32")
        for j, sample in enumerate(samples[1:], start=1):
            out = ops.where((region == j)[:, None], ops.cast(sample, "float32"), out)
        return out

    def compute_output_shape(self, input_shapes):
        return input_shapes[2]

    def get_config(self):
        return {**super().get_config(), "fractions": self.fractions,
                "category_index": self.category_index}


def region_fractions(conditions, regions, n_regions, category_index=0, n_categories=None):
    """P(region | category) estimated from reference data: ``[n_categories, n_regions]``.

    A category absent from the data gets the overall proportions.
    """
    regions = np.asarray(regions, np.int64).ravel()
    overall = np.bincount(regions, minlength=n_regions).astype(np.float64)
    overall /= max(overall.sum(), 1.0)
    if category_index is None:
        return overall[None, :]
    category = np.rint(np.asarray(conditions, np.float64)[:, category_index]).astype(np.int64)
    n_categories = int(n_categories or category.max() + 1)
    out = np.tile(overall, (n_categories, 1))
    for c in range(n_categories):
        counts = np.bincount(regions[category == c], minlength=n_regions).astype(np.float64)
        if counts.sum() > 0:
            out[c] = counts / counts.sum()
    return out


class RegionSplit:
    """Region GANs mixed at sampling time (see the module docstring).

    Args:
        regions: one :class:`~ddsim_gan.models.gan.ConditionalGAN` per region (or any object with
            a ``sampler`` Keras model ``[conditions, noise] -> samples`` and a ``latent_dim``);
            all take the same conditions and the same noise width.
        fractions: ``[categories, regions]`` proportions, e.g. from :func:`region_fractions`.
        category_index: the condition column that selects the row of ``fractions``.
        names: region names (default ``region0, region1, ...``).
    """

    def __init__(self, regions, fractions, category_index=0, names=None):
        self.regions = list(regions)
        if not self.regions:
            raise ValueError("a region split needs at least one region model")
        self.names = tuple(names or (f"region{i}" for i in range(len(self.regions))))
        if len(self.names) != len(self.regions):
            raise ValueError(f"{len(self.regions)} region models but {len(self.names)} names")
        self.fractions = np.asarray(fractions, np.float64).reshape(-1, len(self.regions))
        self.category_index = category_index
        samplers = [self._sampler_of(r) for r in self.regions]
        self.n_conditions = int(samplers[0].inputs[0].shape[-1])
        self.region_latent_dim = int(samplers[0].inputs[1].shape[-1])
        for name, sampler in zip(self.names, samplers):
            shapes = (int(sampler.inputs[0].shape[-1]), int(sampler.inputs[1].shape[-1]))
            if shapes != (self.n_conditions, self.region_latent_dim):
                raise ValueError(f"region {name!r} takes {shapes[0]} conditions and noise of "
                                 f"width {shapes[1]}; expected {self.n_conditions} and "
                                 f"{self.region_latent_dim} like region {self.names[0]!r}")
        self._sampler = None

    @staticmethod
    def _sampler_of(region):
        return region.sampler if hasattr(region, "sampler") else region

    @property
    def latent_dim(self) -> int:
        """Width of the mixture's noise input: a region's noise plus one column for the region
        choice."""
        return self.region_latent_dim + 1

    @property
    def sampler(self) -> keras.Model:
        """``[conditions, noise] -> physical samples``: the region samplers and the mixture."""
        if self._sampler is None:
            self._sampler = self._build_sampler()
        return self._sampler

    def _build_sampler(self):
        conditions = keras.Input((self.n_conditions,), name="conditions")
        noise = keras.Input((self.latent_dim,), name="noise")
        region_noise = NoiseSlice(0, self.region_latent_dim, name="region_noise")(noise)
        outputs = []
        for region, name in zip(self.regions, self.names):
            sampler = self._sampler_of(region)
            # a uniquely named copy of the region's sampler graph (same layers, same weights)
            copy = keras.Model(sampler.inputs, sampler.output, name=f"sampler_{name}")
            outputs.append(copy([conditions, region_noise]))
        mixed = RegionMixture(self.fractions.tolist(), self.category_index,
                              name="region_mixture", dtype="float32")(
            [conditions, noise, *outputs])
        return keras.Model([conditions, noise], mixed, name="region_split_sampler")

    def generate(self, conditions, seed=0, batch_size=16384):
        """Physical samples for physical ``conditions`` (NumPy in and out), reproducible per
        ``seed``."""
        conditions = np.asarray(conditions, np.float32)
        rng = np.random.default_rng(seed)
        noise = rng.standard_normal((len(conditions), self.latent_dim)).astype(np.float32)
        return self.sampler.predict([conditions, noise], batch_size=batch_size, verbose=0)

    def save(self, directory) -> Path:
        """``region_<name>.keras`` (each region's whole GAN when it has one, else its sampler),
        ``regions.json`` and ``generator.keras`` (the mixture) in ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for region, name in zip(self.regions, self.names):
            region.save(directory / f"region_{name}.keras")
        (directory / "regions.json").write_text(json.dumps(
            {"names": list(self.names), "fractions": self.fractions.tolist(),
             "category_index": self.category_index}, indent=1))
        self.sampler.save(directory / "generator.keras")
        return directory

    @classmethod
    def load(cls, directory):
        """The split :meth:`save` wrote."""
        directory = Path(directory)
        info_path = directory / "regions.json"
        if not info_path.is_file():
            raise FileNotFoundError(f"{directory}: no regions.json; not a saved region split")
        info = json.loads(info_path.read_text())
        regions = []
        for name in info["names"]:
            path = directory / f"region_{name}.keras"
            if not path.is_file():
                raise FileNotFoundError(f"{directory}: regions.json names region {name!r} but "
                                        f"{path.name} is missing")
            regions.append(keras.saving.load_model(path))
        return cls(regions, info["fractions"], info["category_index"], info["names"])

    def __repr__(self):
        return f"<RegionSplit {', '.join(self.names)}, fractions {self.fractions.tolist()}>"


def build_region_gan(detector, train_conditions, train_samples, *, r_min=0.0, r_max=None,
                     x_index=0, y_index=1, latent_dim=16, generator_hidden=(256, 256, 256),
                     critic_hidden=(256, 256, 256), critic_steps=4, gradient_penalty=10.0,
                     n_quantiles=1000, margin=0.1, seed=0, name="region_gan",
                     extra_penalties=(), category_quantiles=False):
    """A dense conditional WGAN-GP for the particles of one region (seed 004's recipe).

    The critic sees :class:`RadialQuantileTransform` of the samples (the detector's columns and
    r, Gaussianized); the generator emits the detector's columns in Gaussian units and a
    :class:`RegionHead` maps them to physical units inside ``[r_min, r_max)``. Conditions go
    through ``ConditionEncoder.for_detector`` (one-hot species for LUXE), adapted here.
    ``extra_penalties`` go beside the gradient penalty. ``category_quantiles``: the head maps
    each category of the detector's first categorical condition (LUXE: the species) through
    its own inverse CDF (:class:`~ddsim_gan.models.heads.QuantileHead`).
    """
    from ..data.preprocessing import ConditionEncoder
    from . import networks, penalties
    from .gan import ConditionalGAN

    samples = np.asarray(train_samples, np.float32)
    samples = samples.reshape(len(samples), -1)
    width = samples.shape[1]
    encoder = ConditionEncoder.for_detector(detector, name="condition_encoder", dtype="float32")
    encoder.adapt(train_conditions)
    transform = RadialQuantileTransform(width, x_index, y_index, n_quantiles,
                                        name="sample_transform", dtype="float32").adapt(samples)
    category = {}
    if category_quantiles:
        labelled = [j for j, c in enumerate(detector.conditions) if getattr(c, "labels", None)]
        if not labelled:
            raise ValueError(f"{detector.name}: category_quantiles needs a categorical condition")
        category = dict(category_index=labelled[0],
                        n_categories=len(detector.conditions[labelled[0]].labels))
    head = RegionHead(width, x_index, y_index, r_min, r_max, margin, n_quantiles,
                      name="region_head", dtype="float32", **category).adapt(
        samples, train_conditions)
    base = networks.dense_generator(latent_dim, encoder.output_width, (width,),
                                    hidden=generator_hidden, output_units=head.input_units)
    # keep the Gaussian units inside the range the quantile tables invert (else no gradient)
    bound = NormalDist().inv_cdf(1.0 - head.epsilon)
    generator = keras.Model(base.inputs, networks.SoftClip(bound, name="soft_clip")(base.output),
                            name="generator")
    critic = networks.dense_critic((transform.output_width,), encoder.output_width,
                                   hidden=critic_hidden)
    return ConditionalGAN(generator, critic, encoder, transform, latent_dim,
                          penalties=[penalties.GradientPenalty(gradient_penalty),
                                     *extra_penalties],
                          critic_steps=critic_steps, seed=seed, output_head=head, name=name)
