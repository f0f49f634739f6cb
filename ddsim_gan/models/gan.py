"""ConditionalGAN: a Keras model with its own ``train_step`` for conditional Wasserstein GANs.

One step reads like the algorithm (Gulrajani et al., arXiv:1704.00028, Algorithm 1):

    for each of the critic_steps chunks of the batch:  critic step
    generator step on the whole batch

The model takes *physical* ``(conditions, samples)`` batches; its ``condition_encoder`` and
``sample_transform`` layers normalize them, and :attr:`sampler` is the functional model
``[conditions, noise] -> physical samples`` that is saved as ``.keras`` and exported for serving.
All randomness goes through the model's :class:`keras.random.SeedGenerator`.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from ..data.preprocessing import HardThreshold
from .losses import WassersteinLoss
from .penalties import StepTensors

_PACKAGE = "ddsim_gan"


def _replicas_in_sync() -> int:
    return tf.distribute.get_strategy().num_replicas_in_sync


def _across_workers() -> bool:
    """True under a MultiWorkerMirroredStrategy whose replicas span several workers."""
    strategy = tf.distribute.get_strategy()
    return (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
            and strategy.num_replicas_in_sync > len(strategy.extended.worker_devices))


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ConditionalGAN(keras.Model):
    """Conditional GAN with pluggable loss and penalties.

    Args:
        generator: ``[noise, encoded conditions] -> normalized sample``.
        critic: ``[normalized sample, encoded conditions] -> score``.
        condition_encoder: physical conditions -> encoded conditions (e.g. ``ConditionEncoder``).
        sample_transform: invertible layer physical -> normalized samples (e.g. ``LogScale``).
        latent_dim: width of the noise vector.
        threshold: readout threshold in physical units; generated cells below it are zeroed.
        output_head: optional layer ``[generator output, physical conditions] -> physical
            sample`` (e.g. :class:`~ddsim_gan.models.networks.EnergyShareHead`); the critic then
            sees ``sample_transform`` of its output. Without one the generator's output is the
            normalized sample itself.
        penalties: :mod:`~ddsim_gan.models.penalties` objects (critic or generator side).
        critic_steps: critic updates per generator update; each uses its own chunk of the batch,
            so the batch size must be a multiple of it.
        seed: seed of the model's random stream.
    """

    def __init__(self, generator, critic, condition_encoder, sample_transform, latent_dim,
                 threshold=0.0, penalties=(), critic_steps=5, loss=None, seed=None,
                 output_head=None, **kwargs):
        super().__init__(**kwargs)
        self.generator = generator
        self.critic = critic
        self.condition_encoder = condition_encoder
        self.sample_transform = sample_transform
        self.latent_dim = int(latent_dim)
        self.threshold = float(threshold)
        self.penalties = list(penalties)
        self.critic_steps = int(critic_steps)
        self.adversarial_loss = loss or WassersteinLoss()
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed, name="gan_seed")
        normalized_threshold = float(keras.ops.convert_to_numpy(keras.ops.cast(
            sample_transform.forward(keras.ops.convert_to_tensor(np.float32([threshold]))),
            "float32"))[0]) if threshold else 0.0
        self.output_threshold = (HardThreshold(normalized_threshold, name="output_threshold")
                                 if threshold else None)
        self.output_head = output_head
        self._build_sampler()
        self._trackers = {name: keras.metrics.Mean(name=name) for name in
                          ["critic_loss", "generator_loss", "wasserstein"]
                          + [p.name for p in self.penalties]}
        self.generator_optimizer = None
        self.critic_optimizer = None
        self.built = True

    # ---- the exported sampler ---------------------------------------------------------------
    def _physical(self, raw, conditions):
        """Generator output -> physical sample: through the output head when there is one,
        else the readout threshold (if any) and the inverse sample transform."""
        if self.output_head is not None:
            return self.output_head([raw, conditions])
        if self.output_threshold is not None:
            raw = self.output_threshold(raw)
        return self.sample_transform(raw, inverse=True)

    def _build_sampler(self):
        conditions = keras.Input((self.condition_encoder.n_inputs,), name="conditions")
        noise = keras.Input((self.latent_dim,), name="noise")
        raw = self.generator([noise, self.condition_encoder(conditions)])
        self.sampler = keras.Model([conditions, noise], self._physical(raw, conditions),
                                   name="sampler")

    def draw_noise(self, encoded):
        """Latent noise for a batch of encoded conditions, from the model's seed generator."""
        return keras.random.normal((keras.ops.shape(encoded)[0], self.latent_dim),
                                   seed=self.seed_generator)

    def generate_normalized(self, encoded, conditions, training=False):
        """Generated samples in the critic's normalized units for encoded/physical conditions."""
        raw = self.generator([self.draw_noise(encoded), encoded], training=training)
        # Always through physical units: the critic then sees generated samples exactly as it
        # sees real ones (a quantile transform's point masses collapse the same way).
        return self.sample_transform(self._physical(raw, conditions))

    def generate(self, conditions, seed=0, batch_size=4096):
        """Physical samples for physical ``conditions`` (NumPy in, NumPy out), reproducible per
        ``seed`` through stateless noise."""
        conditions = np.asarray(conditions, np.float32)
        rng = np.random.default_rng(seed)
        noise = rng.standard_normal((len(conditions), self.latent_dim)).astype(np.float32)
        return self.sampler.predict([conditions, noise], batch_size=batch_size, verbose=0)

    def to_physical(self, normalized):
        return self.sample_transform(normalized, inverse=True)

    # ---- compile ------------------------------------------------------------------------------
    def compile(self, generator_optimizer=None, critic_optimizer=None, **kwargs):
        """Give each network its own optimizer instance (defaults: Adam 1e-4, beta = (0.5, 0.9),
        as in arXiv:1704.00028). Under a ``mixed_float16`` policy they are wrapped in
        ``LossScaleOptimizer`` (dynamic loss scaling)."""
        super().compile(**kwargs)
        generator_optimizer = generator_optimizer or keras.optimizers.Adam(1e-4, 0.5, 0.9)
        critic_optimizer = critic_optimizer or keras.optimizers.Adam(1e-4, 0.5, 0.9)
        if generator_optimizer is critic_optimizer:
            raise ValueError("generator and critic need separate optimizer instances")
        if keras.mixed_precision.global_policy().name == "mixed_float16":
            generator_optimizer, critic_optimizer = [
                opt if isinstance(opt, keras.optimizers.LossScaleOptimizer)
                else keras.optimizers.LossScaleOptimizer(opt)
                for opt in (generator_optimizer, critic_optimizer)]
        self.generator_optimizer = generator_optimizer
        self.critic_optimizer = critic_optimizer
        self.generator_optimizer.build(self.generator.trainable_variables)
        self.critic_optimizer.build(self.critic.trainable_variables)

    def own_optimizer(self, optimizer, network, what: str):
        """``optimizer`` for a network a subclass adds (a regressor, a second critic): checked
        not to be the generator's or the critic's, wrapped for dynamic loss scaling under
        ``mixed_float16`` like theirs, and built on ``network``'s weights."""
        if any(optimizer is other for other in (self.generator_optimizer,
                                                self.critic_optimizer)):
            raise ValueError(f"the {what} needs its own optimizer instance")
        if (keras.mixed_precision.global_policy().name == "mixed_float16"
                and not isinstance(optimizer, keras.optimizers.LossScaleOptimizer)):
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(network.trainable_variables)
        return optimizer

    def optimizer_names(self) -> tuple:
        """The attributes (and compile() arguments) holding an optimizer, one per network that
        trains; a subclass with another network adds its own."""
        return ("generator_optimizer", "critic_optimizer")

    def get_compile_config(self):
        if self.generator_optimizer is None:
            return None
        return {name: keras.saving.serialize_keras_object(getattr(self, name))
                for name in self.optimizer_names()}

    def compile_from_config(self, config):
        self.compile(**{name: keras.saving.deserialize_keras_object(config[name])
                        for name in self.optimizer_names()})

    @property
    def metrics(self):
        return list(self._trackers.values())

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        """Keras 3 ``fit`` under a distribution strategy first reduces a data batch across the
        replicas (``strategy.reduce``) to build the model from it. MultiWorkerMirroredStrategy
        cannot reduce a ``(conditions, samples)`` tuple ("Attempt to convert a value (PerReplica
        ...) with an unsupported type", keras #20585, tensorflow #72388). The GAN's networks are
        built when it is constructed, so unless compile() was given metrics or a loss there is
        nothing to build from data: build the rest (Keras' default optimizer) without a batch.
        (Weightless preprocessing layers used outside the sampler, such as the sample transform
        of a model with an output head, may never be marked built; the networks are.)"""
        if (self._distribute_strategy is not None
                and all(network.built for network in self._networks())
                and self._compile_metrics is None and self._compile_loss is None):
            with self.distribute_strategy.scope():
                # Trainer._symbolic_build without a batch
                if self.optimizer is not None and not self.optimizer.built:
                    self.optimizer.build(self.trainable_variables)
                self._post_build()
            return
        super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def _networks(self):
        """The models whose weights training changes (a subclass adds its own)."""
        return [self.generator, self.critic, self.sampler]

    # ---- training -----------------------------------------------------------------------------
    def _critic_scores(self, samples, encoded, training=True):
        return self.critic([samples, encoded], training=training)

    def _step_tensors(self, conditions, encoded, real, fake, optimizer):
        scale = 1.0
        if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            scale = optimizer.dynamic_scale
        return StepTensors(conditions=conditions, encoded=encoded, real=real, fake=fake,
                           critic=lambda x, e: self._critic_scores(x, e),
                           to_physical=self.to_physical, seed_generator=self.seed_generator,
                           loss_scale=scale)

    def _penalty_terms(self, side, step):
        return {p.name: (p.weight, p(step)) for p in self.penalties if p.side == side}

    @staticmethod
    def _scale(optimizer, loss):
        """Per-replica loss to differentiate: gradients are summed over replicas, and under
        float16 the loss is multiplied by the dynamic loss scale (undone by the optimizer)."""
        scaled = loss / _replicas_in_sync()
        if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            scaled = optimizer.scale_loss(scaled)
        return scaled

    def critic_step(self, conditions, encoded, real, fake=None):
        """One critic update on a chunk; ``fake`` (generated for it, without gradient) is
        drawn here when not given."""
        if fake is None:
            fake = self.generate_normalized(encoded, conditions, training=True)
        return self.update_critic(conditions, encoded, real, tf.stop_gradient(fake))

    def update_critic(self, conditions, encoded, real, fake):
        """One critic update on a chunk of real and (already generated) fake samples."""
        with tf.GradientTape() as tape:
            real_scores = tf.cast(self._critic_scores(real, encoded), tf.float32)
            fake_scores = tf.cast(self._critic_scores(fake, encoded), tf.float32)
            loss = self.adversarial_loss.critic(real_scores, fake_scores)
            step = self._step_tensors(conditions, encoded, real, fake, self.critic_optimizer)
            terms = self._penalty_terms("critic", step)
            total = loss + sum(weight * term for weight, term in terms.values())
            scaled = self._scale(self.critic_optimizer, total)
        variables = self.critic.trainable_variables
        self.critic_optimizer.apply(tape.gradient(scaled, variables), variables)
        wasserstein = tf.reduce_mean(real_scores) - tf.reduce_mean(fake_scores)
        return total, wasserstein, terms

    def generator_step(self, conditions, encoded, real):
        with tf.GradientTape() as tape:
            fake = self.generate_normalized(encoded, conditions, training=True)
            fake_scores = tf.cast(self._critic_scores(fake, encoded), tf.float32)
            loss = self.adversarial_loss.generator(fake_scores)
            step = self._step_tensors(conditions, encoded, real, fake, self.generator_optimizer)
            terms = self._penalty_terms("generator", step)
            total = loss + sum(weight * term for weight, term in terms.values())
            scaled = self._scale(self.generator_optimizer, total)
        variables = self.generator.trainable_variables
        self.generator_optimizer.apply(tape.gradient(scaled, variables), variables)
        return total, terms

    def _chunks(self, tensor):
        """Strided chunks (event i goes to critic step i mod critic_steps): under a
        distribution strategy the replicas' chunks k together are the global batch's chunk k."""
        shape = tf.shape(tensor)
        chunked = tf.reshape(tensor, tf.concat([[-1, self.critic_steps], shape[1:]], axis=0))
        return tf.unstack(chunked, num=self.critic_steps, axis=1)

    def train_step(self, data):
        conditions, samples = data
        conditions = tf.cast(conditions, tf.float32)
        encoded = self.condition_encoder(conditions)
        real = tf.cast(self.sample_transform(samples), tf.float32)
        # The generator does not change during the critic updates, so the fakes of all its
        # chunks come from one call: one pass over the batch costs less than critic_steps
        # passes over its chunks (DarkSHINE's rendering on CPU: 68 ms against 4 x 24 ms).
        fake = self.generate_normalized(encoded, conditions, training=True)
        chunks = zip(self._chunks(conditions), self._chunks(encoded), self._chunks(real),
                     self._chunks(fake))
        for chunk_conditions, chunk_encoded, chunk_real, chunk_fake in chunks:
            critic_loss, wasserstein, critic_terms = self.critic_step(
                chunk_conditions, chunk_encoded, chunk_real, chunk_fake)
        generator_loss, generator_terms = self.generator_step(conditions, encoded, real)
        return self._update_metrics(critic_loss, generator_loss, wasserstein,
                                    {**critic_terms, **generator_terms})

    def test_step(self, data):
        conditions, samples = data
        conditions = tf.cast(conditions, tf.float32)
        encoded = self.condition_encoder(conditions)
        real = tf.cast(self.sample_transform(samples), tf.float32)
        fake = self.generate_normalized(encoded, conditions)
        real_scores = tf.cast(self._critic_scores(real, encoded, training=False), tf.float32)
        fake_scores = tf.cast(self._critic_scores(fake, encoded, training=False), tf.float32)
        step = self._step_tensors(conditions, encoded, real, fake, None)
        terms = {p.name: (p.weight, p(step)) for p in self.penalties
                 if p.side == "generator"}
        return self._update_metrics(
            self.adversarial_loss.critic(real_scores, fake_scores),
            self.adversarial_loss.generator(fake_scores),
            tf.reduce_mean(real_scores) - tf.reduce_mean(fake_scores), terms)

    def _update_metrics(self, critic_loss, generator_loss, wasserstein, terms):
        self._trackers["critic_loss"].update_state(critic_loss)
        self._trackers["generator_loss"].update_state(generator_loss)
        self._trackers["wasserstein"].update_state(wasserstein)
        for name, (_, value) in terms.items():
            self._trackers[name].update_state(value)
        logs = {name: tracker.result() for name, tracker in self._trackers.items()}
        if _across_workers():
            # Keras 3 averages each log over workers with strategy.reduce("MEAN", log, axis=0),
            # which needs an axis: a length-1 one, which the mean removes again.
            logs = {name: value[None] for name, value in logs.items()}
        return logs

    def call(self, inputs, training=False):
        return self.sampler(inputs, training=training)

    # ---- serialization ------------------------------------------------------------------------
    def get_config(self):
        serialize = keras.saving.serialize_keras_object
        return {
            "name": self.name,
            "generator": serialize(self.generator), "critic": serialize(self.critic),
            "condition_encoder": serialize(self.condition_encoder),
            "sample_transform": serialize(self.sample_transform),
            "latent_dim": self.latent_dim, "threshold": self.threshold,
            "penalties": [serialize(p) for p in self.penalties],
            "critic_steps": self.critic_steps, "loss": serialize(self.adversarial_loss),
            "seed": self.seed,
            "output_head": serialize(self.output_head) if self.output_head is not None else None,
        }

    @classmethod
    def from_config(cls, config):
        from . import binned_moments, impact_moments  # noqa: F401  (register their penalties)

        config = dict(config)
        deserialize = keras.saving.deserialize_keras_object
        for key in ("generator", "critic", "condition_encoder", "sample_transform", "loss"):
            config[key] = deserialize(config[key])
        config["penalties"] = [deserialize(p) for p in config.get("penalties", [])]
        if config.get("output_head") is not None:
            config["output_head"] = deserialize(config["output_head"])
        return cls(**config)
