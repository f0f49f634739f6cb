"""A GAN that learns a non-differentiable metric with priority, through an auxiliary regressor.

Seed 001 ("Fine tune specific metric"; A. Rogachev, F. Ratnikov, arXiv:2207.06329, LHCb ECAL):
if the target metric cannot be expressed as a computational graph,

* construct an auxiliary surrogate regressor R(x, c) to estimate the target metric m(x, c) for
  an object x with conditions c;
* consider the surrogate metric as an object feature: the critic sees R(x, c) beside x;
* train the generative model and the regressor simultaneously.

Here m is any NumPy function of the physical ``(conditions, samples)`` (e.g.
:meth:`~ddsim_gan.detectors.lhcb_ecal.LHCbECAL.asymmetry`); it is evaluated on reference
batches in the tf.data pipeline (:func:`metric_batch_map`), never inside the train step, so the
step stays one XLA graph. Each train step of :class:`AuxiliaryRegressorGAN` is

    regressor step on the real batch:  min_R  RegressionLoss(R(x_real, c), m(x_real, c))
    for each of the critic_steps chunks:  critic step with D(x, c, R(x, c))
    generator step through D(G(z, c), c, R(G(z, c), c))

The regressor is trained on reference images only, its prediction on generated ones enters the
critic as a feature, and its weights are not updated by the critic or generator losses. The
gradient penalty is taken through the whole map x -> D(x, c, R(x, c)). The generator gets the
gradient of the metric through R, which is what gives that metric priority.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

from .gan import ConditionalGAN
from .networks import critic_precision

_PACKAGE = "ddsim_gan"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class RegressionLoss:
    """Huber loss of the standardized metric (P. J. Huber, Ann. Math. Stat. 35 (1964) 73):

        L = mean( 1/2 r^2 if |r| <= delta else delta (|r| - delta / 2) ),  r = R(x, c) - m(x, c)

    with m standardized by the training targets' mean and spread (so ``delta`` is in units of
    the metric's standard deviation). ``delta = inf`` is the mean squared error / 2.
    """

    name = "regressor_loss"

    def __init__(self, delta: float = 1.0, weight: float = 1.0):
        self.delta = float(delta)
        self.weight = float(weight)

    def __call__(self, target, predicted):
        residual = tf.abs(tf.cast(predicted, tf.float32) - tf.cast(target, tf.float32))
        quadratic = tf.minimum(residual, self.delta)
        return tf.reduce_mean(0.5 * quadratic ** 2 + self.delta * (residual - quadratic))

    def get_config(self):
        return {"delta": self.delta, "weight": self.weight}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class EnergyFractions(keras.layers.Layer):
    """Normalized sample -> each cell's fraction of the event's energy, flattened ``[n, cells]``
    (the normalization inverted with the :class:`~ddsim_gan.data.preprocessing.LogScale`
    ``scale``, ``norm``; an empty event gives zeros)."""

    def __init__(self, scale, norm, **kwargs):
        kwargs.setdefault("dtype", "float32")      # computed in float32 (critic_precision)
        super().__init__(**kwargs)
        self.scale = float(scale)
        self.norm = float(norm)

    def call(self, normalized):
        y = ops.reshape(ops.cast(normalized, "float32"), (ops.shape(normalized)[0], -1))
        energy = self.scale * ops.expm1(y * self.norm)
        return energy / (ops.sum(energy, axis=1, keepdims=True) + 1e-6)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], math.prod(input_shape[1:]))

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "norm": self.norm}


@critic_precision
def dense_regressor(sample_shape, condition_width, hidden=(256, 128), fractions=None,
                    readout_hidden=128, name="regressor"):
    """``[normalized sample, encoded conditions]`` -> one number (the standardized metric).

    An MLP of the cells and the conditions; with ``fractions`` (an :class:`EnergyFractions`
    layer) also a conditional linear readout sum_i f_i w_i(c) of the energy fractions f_i, the
    weights w(c) = tanh(MLP(c)) one per cell: most shower metrics (asymmetries, energy
    shares) are linear in the fractions with condition-dependent weights, so this path learns
    them from far fewer examples than the MLP of the cells alone. Both paths are combined by
    the output unit.
    """
    sample = keras.Input(tuple(sample_shape), name="sample")
    conditions = keras.Input((condition_width,), name="encoded_conditions")
    x = layers.Concatenate()([layers.Flatten()(sample), conditions])
    for i, units in enumerate(hidden):
        x = layers.LeakyReLU(0.2)(layers.Dense(units, name=f"dense_{i}")(x))
        x = layers.Concatenate()([x, conditions])   # the metric depends on c at every scale
    pieces = [x]
    if fractions is not None:
        w = layers.LeakyReLU(0.2)(layers.Dense(readout_hidden, name="weights_hidden_0")(
            conditions))
        w = layers.LeakyReLU(0.2)(layers.Dense(readout_hidden, name="weights_hidden_1")(w))
        w = layers.Dense(math.prod(sample_shape), activation="tanh", name="cell_weights")(
            layers.Concatenate()([w, conditions]))
        pieces.append(layers.Dot(axes=1, name="readout")([fractions(sample), w]))
    out = layers.Dense(1, dtype="float32", name="prediction")(
        layers.Concatenate()(pieces) if len(pieces) > 1 else pieces[0])
    return keras.Model([sample, conditions], out, name=name)


@critic_precision
def auxiliary_dense_critic(sample_shape, condition_width, n_auxiliary=1, hidden=(512, 256),
                           features=None, name="critic"):
    """``[normalized sample, encoded conditions, auxiliary features]`` -> score.

    As :func:`~ddsim_gan.models.networks.dense_critic`, with the auxiliary features (the
    regressor's prediction) concatenated to the input of every dense layer and of the score, so
    that a handful of numbers is not drowned among the cells ("emphasis on the target feature",
    seed 001).
    """
    sample = keras.Input(tuple(sample_shape), name="sample")
    conditions = keras.Input((condition_width,), name="encoded_conditions")
    auxiliary = keras.Input((n_auxiliary,), name="auxiliary_features")
    pieces = [layers.Flatten()(sample), conditions]
    for feature in (features if isinstance(features, (list, tuple)) else [features]):
        if feature is not None:
            pieces.append(feature(sample))
    x = layers.Concatenate()(pieces)
    for i, units in enumerate(hidden):
        x = layers.Concatenate()([x, auxiliary])
        x = layers.LeakyReLU(0.2)(layers.Dense(units, name=f"dense_{i}")(x))
    x = layers.Concatenate()([x, auxiliary])
    score = layers.Dense(1, dtype="float32", name="score")(x)
    return keras.Model([sample, conditions, auxiliary], score, name=name)


def metric_batch_map(metric, n_conditions, sample_shape):
    """A ``tf.data`` map ``(conditions, samples) -> (conditions, samples, m(samples, conditions))``
    for ``metric(samples, conditions) -> [n]`` (NumPy), run by ``tf.numpy_function`` in the input
    pipeline; give it to :func:`ddsim_gan.recipe.train` as ``batch_map``."""

    def numpy_metric(conditions, samples):
        return np.asarray(metric(samples, conditions), np.float32).reshape(-1)

    def add_target(conditions, samples):
        target = tf.numpy_function(numpy_metric, [conditions, samples], tf.float32,
                                   stateful=False)
        target = tf.ensure_shape(target, [None])
        return (tf.ensure_shape(conditions, [None, n_conditions]),
                tf.ensure_shape(samples, [None, *sample_shape]), target)

    return add_target


@keras.saving.register_keras_serializable(package=_PACKAGE)
class AuxiliaryRegressorGAN(ConditionalGAN):
    """:class:`~ddsim_gan.models.gan.ConditionalGAN` with an auxiliary regressor (module doc).

    Args (besides ConditionalGAN's):
        regressor: ``[normalized sample, encoded conditions] -> [n, 1]`` standardized metric.
        critic: ``[normalized sample, encoded conditions, regressor output] -> score``.
        target_mean, target_scale: standardization of the metric (fit on the training targets).
        regression_loss: a :class:`RegressionLoss` (default Huber, delta 1).

    Batches are ``(conditions, samples, targets)`` (see :func:`metric_batch_map`).
    """

    def __init__(self, generator, critic, condition_encoder, sample_transform, latent_dim,
                 regressor=None, target_mean=0.0, target_scale=1.0, regression_loss=None,
                 **kwargs):
        if regressor is None:
            raise ValueError("AuxiliaryRegressorGAN needs a regressor")
        super().__init__(generator, critic, condition_encoder, sample_transform, latent_dim,
                         **kwargs)
        self.regressor = regressor
        self.target_mean = float(target_mean)
        self.target_scale = float(target_scale)
        self.regression_loss = regression_loss or RegressionLoss()
        self._trackers[self.regression_loss.name] = keras.metrics.Mean(
            name=self.regression_loss.name)
        self.regressor_optimizer = None

    # ---- the regressor ---------------------------------------------------------------------
    def _networks(self):
        return super()._networks() + [self.regressor]

    def _critic_scores(self, samples, encoded, training=True):
        feature = self.regressor([samples, encoded], training=False)
        return self.critic([samples, encoded, feature], training=training)

    def standardize(self, targets):
        return (tf.cast(targets, tf.float32) - self.target_mean) / self.target_scale

    def regressor_step(self, real, encoded, targets):
        with tf.GradientTape() as tape:
            predicted = tf.cast(self.regressor([real, encoded], training=True), tf.float32)
            loss = self.regression_loss(self.standardize(targets), predicted[:, 0])
            scaled = self._scale(self.regressor_optimizer, self.regression_loss.weight * loss)
        variables = self.regressor.trainable_variables
        self.regressor_optimizer.apply(tape.gradient(scaled, variables), variables)
        return loss

    def predict_metric(self, conditions, samples, batch_size=4096) -> np.ndarray:
        """The regressor's estimate of the metric for physical ``(conditions, samples)``."""
        out = []
        for start in range(0, len(conditions), batch_size):
            c = tf.constant(np.asarray(conditions[start:start + batch_size], np.float32))
            s = tf.constant(np.asarray(samples[start:start + batch_size], np.float32))
            predicted = self.regressor([self.sample_transform(s), self.condition_encoder(c)],
                                       training=False)
            out.append(np.asarray(predicted)[:, 0])
        return np.concatenate(out) * self.target_scale + self.target_mean

    # ---- steps ---------------------------------------------------------------------------------
    def _split(self, data):
        if len(data) != 3:
            raise ValueError("AuxiliaryRegressorGAN: batches must be (conditions, samples, "
                             "targets); map the dataset with metric_batch_map")
        conditions, samples, targets = data
        conditions = tf.cast(conditions, tf.float32)
        real = tf.cast(self.sample_transform(samples), tf.float32)
        return conditions, samples, targets, self.condition_encoder(conditions), real

    def train_step(self, data):
        conditions, samples, targets, encoded, real = self._split(data)
        loss = self.regressor_step(real, encoded, targets)
        self._trackers[self.regression_loss.name].update_state(loss)
        return super().train_step((conditions, samples))

    def test_step(self, data):
        conditions, samples, targets, encoded, real = self._split(data)
        predicted = tf.cast(self.regressor([real, encoded], training=False), tf.float32)
        self._trackers[self.regression_loss.name].update_state(
            self.regression_loss(self.standardize(targets), predicted[:, 0]))
        return super().test_step((conditions, samples))

    # ---- compile and serialization ------------------------------------------------------------
    def compile(self, generator_optimizer=None, critic_optimizer=None, regressor_optimizer=None,
                **kwargs):
        """As :meth:`ConditionalGAN.compile`, plus the regressor's optimizer (default Adam 1e-3)."""
        super().compile(generator_optimizer, critic_optimizer, **kwargs)
        self.regressor_optimizer = self.own_optimizer(
            regressor_optimizer or keras.optimizers.Adam(1e-3), self.regressor, "regressor")

    def optimizer_names(self):
        return super().optimizer_names() + ("regressor_optimizer",)

    def get_config(self):
        serialize = keras.saving.serialize_keras_object
        return {**super().get_config(), "regressor": serialize(self.regressor),
                "target_mean": self.target_mean, "target_scale": self.target_scale,
                "regression_loss": serialize(self.regression_loss)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        deserialize = keras.saving.deserialize_keras_object
        config["regressor"] = deserialize(config["regressor"])
        config["regression_loss"] = deserialize(config["regression_loss"])
        return super().from_config(config)


def build_auxiliary_gan(detector, train_conditions, train_samples, train_targets=None, *,
                        condition_encoder=None, regressor=True, energy_condition=None,
                        latent_dim=64, generator_hidden=(256, 256), critic_hidden=(256, 256),
                        regressor_hidden=(256, 128), critic_steps=4, gradient_penalty=10.0,
                        log_scale=1.0, cell_noise=True, readout_noise=None, extra_penalties=(),
                        seed=0):
    """A dense conditional WGAN-GP for an image detector with (``regressor=True``, an
    :class:`AuxiliaryRegressorGAN`; ``train_targets`` fit the metric's standardization) or
    without (the ablation: a plain :class:`ConditionalGAN` with the same generator and critic
    but no auxiliary input) the auxiliary regressor.

    ``condition_encoder`` defaults to ``ConditionEncoder.for_detector`` (e.g. give an
    :class:`~ddsim_gan.data.geometry_encoders.ImpactPointEncoder`); the rest is as
    :func:`~ddsim_gan.models.builders.build_conditional_gan` (LogScale of the largest cell,
    ShowerFeatures in the critic, EnergyShareHead on ``energy_condition``); with an energy head
    the generator is :func:`~ddsim_gan.models.calorimeter.cell_generator` (per-cell noise when
    ``cell_noise``, conditions next to the output, started at the mean shower; with
    ``readout_noise`` the detector's nominal noise, a
    :class:`~ddsim_gan.models.calorimeter.NoisyEnergyShareHead`). The regressor is
    :func:`dense_regressor` with the fraction readout.
    """
    import math

    from ..data.preprocessing import ConditionEncoder, LogScale
    from . import networks, penalties as penalty_objects
    from .builders import fit_response
    from .calorimeter import NoisyEnergyShareHead, cell_generator, start_at_category_means

    encoder = condition_encoder or ConditionEncoder.for_detector(
        detector, name="condition_encoder", dtype="float32")
    encoder.adapt(train_conditions)
    norm = float(np.log1p(float(np.max(train_samples)) / log_scale))
    transform = LogScale(log_scale, norm, name="sample_transform", dtype="float32")
    features = networks.ShowerFeatures.for_detector(detector, log_scale, norm)
    head, output_units = None, None
    if energy_condition is not None:
        mean, spread = fit_response(detector, train_conditions, train_samples, energy_condition)
        head_class = networks.EnergyShareHead if readout_noise is None else NoisyEnergyShareHead
        noise = {} if readout_noise is None else {"noise_sigma": readout_noise}
        head = head_class(
            detector.sample_shape, detector.condition_names.index(energy_condition), mean,
            detector.threshold, response_spread=spread, name="energy_share", **noise)
        output_units = math.prod(detector.sample_shape) + 1
    latent = latent_dim
    if head is not None:
        generator = cell_generator(latent_dim, encoder.output_width, detector.sample_shape,
                                   hidden=generator_hidden, cell_noise=cell_noise,
                                   readout_noise=readout_noise is not None)
        start_at_category_means(generator, encoder, detector, train_conditions, train_samples,
                                energy_condition, mean)
        latent = generator.inputs[0].shape[-1]
    else:
        generator = networks.dense_generator(latent_dim, encoder.output_width,
                                             detector.sample_shape, hidden=generator_hidden)
    penalties = [penalty_objects.GradientPenalty(gradient_penalty), *extra_penalties]
    common = dict(threshold=detector.threshold, penalties=penalties, critic_steps=critic_steps,
                  seed=seed, output_head=head)
    if not regressor:
        critic = networks.dense_critic(detector.sample_shape, encoder.output_width,
                                       hidden=critic_hidden, features=features)
        return ConditionalGAN(generator, critic, encoder, transform, latent,
                              name=f"{detector.name}_gan", **common)
    if train_targets is None:
        raise ValueError("build_auxiliary_gan: the regressor needs train_targets (the metric "
                         "of the training samples) to standardize its output")
    targets = np.asarray(train_targets, np.float64)
    critic = auxiliary_dense_critic(detector.sample_shape, encoder.output_width, 1,
                                    hidden=critic_hidden, features=features)
    network = dense_regressor(detector.sample_shape, encoder.output_width, regressor_hidden,
                              fractions=EnergyFractions(log_scale, norm, name="fractions"))
    return AuxiliaryRegressorGAN(generator, critic, encoder, transform, latent,
                                 regressor=network, target_mean=float(targets.mean()),
                                 target_scale=float(targets.std() or 1.0),
                                 name=f"{detector.name}_aux_gan", **common)
