"""A conditional masked autoregressive flow: the "neural likelihood model" baseline of seed 000.

The DarkSide-20k seed names neural likelihood models as the more stable (if slower to sample)
alternative to GANs. :class:`ConditionalFlow` is one, built from ``tfp.bijectors``:

    y = Q(x),   z = f_c^-1(y) ~ N(0, I),   log p(x | c) = log N(f_c^-1(y)) + log|det J_{f_c^-1}(y)|
                                                          + log|dQ/dx|,

with Q the :class:`~ddsim_gan.data.preprocessing.QuantileTransform` of the outputs (S1, S2,
f200) and f_c a stack of ``tfb.MaskedAutoregressiveFlow`` layers (G. Papamakarios, T. Pavlakou,
I. Murray, arXiv:1705.07057), each an affine autoregressive transform whose shift and log-scale
come from a ``tfb.AutoregressiveNetwork`` (MADE, M. Germain et al., arXiv:1502.03509) that also
sees the encoded conditions (``conditional=True``), with the order of the outputs reversed
between layers. Training maximizes the likelihood of the Gaussianized outputs (log|dQ/dx| does
not depend on the flow); sampling draws z ~ N(0, I) and runs the flow forward, one output per
MADE pass, then Q^-1.

With ``standardize=True`` (what the recipe uses) the outputs are first centred and scaled at
their conditions by the same :class:`~ddsim_gan.data.preprocessing.ConditionalStandardize` as the
GAN chain's, r = (x - m(c)) / s(c) in physical units, and the flow models r (standardized once
more, linearly) instead of Q(x): in the marginal's Gaussian units the conditional distributions
are narrow and skewed where the marginal density changes fast, and a flow sample in their tail
is stretched back into a far outlier that doubles a bin's width (measured: worst 10-keV-bin
width off by a factor 3 with Q(x), see the recipe's notes). The standardization's Jacobian
depends on c only, so maximizing the likelihood of r is maximizing that of x.

It is TensorFlow-only (TFP bijectors are TensorFlow code; its MADEs are ``tf_keras`` layers) and
a ``tf.Module``: ``flow([conditions, noise])`` returns physical samples, so the package's
:func:`~ddsim_gan.export.export_savedmodel` exports it with the same signature as the GANs,
``serving_default(conditions float32 [N, c], seed int64 []) -> {"samples"}``; the graph holds
standard TF ops only.
"""

from __future__ import annotations

import time

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

tfb, tfd = tfp.bijectors, tfp.distributions


class ConditionalFlow(tf.Module):
    """Conditional MAF on quantile-transformed outputs (see the module docstring).

    Args:
        condition_encoder: adapted :class:`~ddsim_gan.data.preprocessing.ConditionEncoder`
            (physical conditions -> network inputs).
        sample_transform: adapted :class:`~ddsim_gan.data.preprocessing.QuantileTransform` of
            the ``n_features`` outputs (or a ``Standardize`` of the standardized outputs).
        standardizer: optional adapted
            :class:`~ddsim_gan.data.preprocessing.ConditionalStandardize` applied (to the
            encoded conditions) before ``sample_transform``.
        hidden: hidden units of each MADE.
        n_layers: number of MAF layers.
        dequantize: standard deviation of the Gaussian jitter added to Q(x) in training, so
            point masses (S1 = 0) and the transform's clamped edges keep a finite likelihood.
        seed: seed of the weight initialization and of the training batches.
    """

    def __init__(self, condition_encoder, sample_transform, hidden=(64, 64), n_layers=5,
                 dequantize=1e-3, seed=0, standardizer=None, name="conditional_maf"):
        import tf_keras  # TFP's Keras 2 (its MADEs are tf_keras layers)

        super().__init__(name=name)
        self.condition_encoder = condition_encoder
        self.sample_transform = sample_transform
        self.standardizer = standardizer
        self.n_features = int(getattr(sample_transform, "n_features", None)
                              or np.prod(sample_transform.feature_shape))
        self.n_conditions = int(condition_encoder.n_inputs)
        self.latent_dim = self.n_features
        self.dequantize = float(dequantize)
        self.seed = int(seed)
        width = int(condition_encoder.output_width)
        self.mades = []
        self.bijectors = []  # base -> data order
        reverse = list(range(self.n_features))[::-1]
        for i in range(int(n_layers)):
            made = tfb.AutoregressiveNetwork(
                params=2, event_shape=[self.n_features], conditional=True,
                conditional_event_shape=[width], hidden_units=list(hidden), activation="tanh",
                kernel_initializer=tf_keras.initializers.GlorotUniform(seed=self.seed + i),
                name=f"made_{i}")
            self.mades.append(made)
            if i:
                self.bijectors.append(tfb.Permute(permutation=reverse, name=f"reverse_{i}"))
            self.bijectors.append(tfb.MaskedAutoregressiveFlow(made, name=f"maf_{i}"))
        self.base = tfd.MultivariateNormalDiag(loc=tf.zeros([self.n_features]))
        # build the MADE weights
        self.log_prob_normalized(tf.zeros([1, self.n_features]), tf.zeros([1, width]))

    @classmethod
    def for_detector(cls, detector, train_conditions, train_samples, *, n_quantiles=1000,
                     standardize=False, n_knots=24, **kwargs):
        """A flow for a vector detector, its encoder and transforms adapted to training data:
        ``standardize=False`` models Q(x); ``True`` the conditionally standardized outputs."""
        from ..data.preprocessing import (ConditionalStandardize, ConditionEncoder,
                                          QuantileTransform, Standardize)

        samples = np.asarray(train_samples, np.float32).reshape(len(train_samples), -1)
        encoder = ConditionEncoder.for_detector(detector, name="condition_encoder",
                                                dtype="float32").adapt(train_conditions)
        if not standardize:
            transform = QuantileTransform(samples.shape[1], n_quantiles, name="sample_transform",
                                          dtype="float32").adapt(samples)
            return cls(encoder, transform, **kwargs)
        encoded = np.asarray(encoder(np.asarray(train_conditions, np.float32)))
        standardizer = ConditionalStandardize.for_encoder(
            encoder, samples.shape[1], n_knots=n_knots, n_quantiles=n_quantiles, space="linear",
            name="standardize", dtype="float32")
        standardizer.adapt(samples, encoded)
        residual = np.asarray(standardizer([samples, encoded]))
        transform = Standardize((samples.shape[1],), name="sample_transform",
                                dtype="float32").adapt(residual)
        return cls(encoder, transform, standardizer=standardizer, **kwargs)

    @property
    def trainable_variables(self):
        return [v for made in self.mades for v in made.trainable_variables]

    # ---- density ------------------------------------------------------------------------------
    def _kwargs(self, bijector, encoded):
        if isinstance(bijector, tfb.MaskedAutoregressiveFlow):
            return {"conditional_input": encoded}
        return {}

    def log_prob_normalized(self, y, encoded):
        """log p(y | c) of Gaussianized outputs ``y = Q(x)`` ``[N, k]`` (nats per event)."""
        z = tf.cast(y, tf.float32)
        encoded = tf.cast(encoded, tf.float32)
        log_det = tf.zeros(tf.shape(z)[:1])
        for bijector in reversed(self.bijectors):
            kwargs = self._kwargs(bijector, encoded)
            log_det += bijector.inverse_log_det_jacobian(z, event_ndims=1, **kwargs)
            z = bijector.inverse(z, **kwargs)
        return self.base.log_prob(z) + log_det

    def normalize(self, samples, encoded):
        """Physical samples -> the flow's data space y (Q(x), or the standardized r)."""
        x = tf.cast(samples, tf.float32)
        if self.standardizer is not None:
            x = self.standardizer([x, encoded])
        return self.sample_transform(x)

    def log_prob(self, conditions, samples):
        """log p(y | c) for physical conditions and samples, y = Q(x) or the standardized
        outputs (the training objective; the transforms' Jacobians do not involve the flow)."""
        encoded = self.condition_encoder(tf.cast(conditions, tf.float32))
        return self.log_prob_normalized(self.normalize(samples, encoded), encoded)

    # ---- sampling -------------------------------------------------------------------------------
    def __call__(self, inputs, training=False):
        """``[conditions [N, c], noise [N, k]] -> physical samples [N, k]``."""
        conditions, noise = inputs
        encoded = self.condition_encoder(tf.cast(conditions, tf.float32))
        y = tf.cast(noise, tf.float32)
        for bijector in self.bijectors:
            y = bijector.forward(y, **self._kwargs(bijector, encoded))
        x = self.sample_transform(y, inverse=True)
        if self.standardizer is not None:
            x = self.standardizer([x, encoded], inverse=True)
        return x

    @tf.function(reduce_retracing=True)
    def _sample(self, conditions, noise):
        return self([conditions, noise])

    def generate(self, conditions, seed=0, batch_size=65536):
        """Physical samples for physical ``conditions`` (NumPy in and out), reproducible per
        ``seed``."""
        conditions = np.asarray(conditions, np.float32)
        noise = np.random.default_rng(seed).standard_normal(
            (len(conditions), self.latent_dim)).astype(np.float32)
        out = [self._sample(tf.constant(conditions[i:i + batch_size]),
                            tf.constant(noise[i:i + batch_size])).numpy()
               for i in range(0, len(conditions), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, self.n_features), np.float32)

    # ---- training -------------------------------------------------------------------------------
    def fit(self, conditions, samples, *, steps, batch_size=1024, learning_rate=1e-3,
            final_fraction=0.05, time_limit_minutes=None, log_every=500, validation=None):
        """Maximum likelihood with Adam and a cosine learning-rate decay over ``steps``; stops
        early at ``time_limit_minutes``. Returns the history ``{"nll": [...], "val_nll":
        [...]}`` (mean negative log-likelihood per ``log_every`` steps)."""
        import tf_keras

        encoded = tf.constant(np.asarray(
            self.condition_encoder(tf.constant(np.asarray(conditions, np.float32))), np.float32))
        y = tf.constant(np.asarray(self.normalize(
            np.asarray(samples, np.float32).reshape(len(samples), -1), encoded), np.float32))
        n = int(encoded.shape[0])
        schedule = tf_keras.optimizers.schedules.CosineDecay(learning_rate, int(steps),
                                                             alpha=final_fraction)
        optimizer = tf_keras.optimizers.Adam(schedule)
        variables = self.trainable_variables
        generator = tf.random.Generator.from_seed(self.seed)

        @tf.function
        def step():
            index = generator.uniform([batch_size], 0, n, dtype=tf.int64)
            batch_y = tf.gather(y, index)
            batch_y += self.dequantize * generator.normal(tf.shape(batch_y))
            with tf.GradientTape() as tape:
                loss = -tf.reduce_mean(self.log_prob_normalized(batch_y, tf.gather(encoded, index)))
            gradients = tape.gradient(loss, variables)
            gradients, _ = tf.clip_by_global_norm(gradients, 10.0)
            optimizer.apply_gradients(zip(gradients, variables))
            return loss

        if validation is not None:
            val_encoded = self.condition_encoder(tf.constant(np.asarray(validation[0], np.float32)))
            val_y = self.normalize(np.asarray(validation[1], np.float32), val_encoded)
        history = {"nll": [], "val_nll": []}
        started, losses = time.monotonic(), []
        for i in range(int(steps)):
            loss = float(step())
            if not np.isfinite(loss):
                raise FloatingPointError(f"flow training diverged at step {i + 1}: nll = {loss}")
            losses.append(loss)
            if (i + 1) % log_every == 0 or i + 1 == steps:
                history["nll"].append(float(np.mean(losses)))
                losses = []
                message = f"step {i + 1}/{steps}: nll {history['nll'][-1]:.4f}"
                if validation is not None:
                    history["val_nll"].append(float(-tf.reduce_mean(
                        self.log_prob_normalized(val_y, val_encoded))))
                    message += f", val_nll {history['val_nll'][-1]:.4f}"
                print(message, flush=True)
                if (time_limit_minutes is not None
                        and time.monotonic() - started > 60 * time_limit_minutes):
                    print(f"time limit of {time_limit_minutes} min reached at step {i + 1}")
                    break
        return history

    # ---- size ---------------------------------------------------------------------------------
    @property
    def nbytes(self) -> int:
        """Bytes of the weights (MADEs, quantiles, encoder)."""
        weights = [*self.trainable_variables, *self.condition_encoder.weights,
                   *self.sample_transform.weights,
                   *(self.standardizer.weights if self.standardizer is not None else [])]
        return int(sum(int(np.prod(w.shape)) * 4 for w in weights))
