"""Assemble a ConditionalGAN for a registry detector from a few architecture choices."""

from __future__ import annotations

import numpy as np

from ..data.preprocessing import ConditionEncoder, LogScale
from . import networks, penalties as penalty_objects
from .gan import ConditionalGAN


def build_conditional_gan(detector, train_conditions, *, max_value, latent_dim=64,
                          generator_hidden=(512, 512), critic_hidden=(512, 256), critic_steps=4,
                          gradient_penalty=10.0, shower_features=True, log_scale=1.0,
                          extra_penalties=(), seed=0):
    """A dense conditional WGAN-GP for an image detector.

    Samples are normalized by ``LogScale(log_scale, log1p(max_value / log_scale))`` so cells span
    [0, ~1]; conditions by a :class:`ConditionEncoder` adapted to ``train_conditions``.
    """
    # Preprocessing stays float32 under mixed precision: physical units need the range.
    encoder = ConditionEncoder.for_detector(detector, name="condition_encoder", dtype="float32")
    encoder.adapt(train_conditions)
    norm = float(np.log1p(max_value / log_scale))
    transform = LogScale(log_scale, norm, name="sample_transform", dtype="float32")
    features = (networks.ShowerFeatures.for_detector(detector, log_scale, norm)
                if shower_features and detector.axes else None)
    generator = networks.dense_generator(latent_dim, encoder.output_width, detector.sample_shape,
                                         hidden=generator_hidden)
    critic = networks.dense_critic(detector.sample_shape, encoder.output_width,
                                   hidden=critic_hidden, features=features)
    penalties = [penalty_objects.GradientPenalty(gradient_penalty), *extra_penalties]
    return ConditionalGAN(generator, critic, encoder, transform, latent_dim,
                          threshold=detector.threshold, penalties=penalties,
                          critic_steps=critic_steps, seed=seed, name=f"{detector.name}_gan")
