"""Assemble a ConditionalGAN for a registry detector from a few architecture choices."""

from __future__ import annotations

import math

import numpy as np

from ..data.preprocessing import ConditionEncoder, LogScale
from . import networks, penalties as penalty_objects
from .gan import ConditionalGAN


def fit_response(detector, conditions, samples, energy_condition) -> tuple[float, float]:
    """Mean and a bound on the spread of log(sum_E / E), for :class:`EnergyShareHead`.

    The bound is six standard deviations of the training data's log response, between 0.02 and 3.
    """
    index = detector.condition_names.index(energy_condition)
    energy = np.asarray(conditions, np.float64)[:, index]
    totals = np.asarray(samples, np.float64).reshape(len(samples), -1).sum(axis=1)
    useful = (totals > 0) & (energy > 0)
    if not useful.any():
        raise ValueError("no event with positive energy and condition to fit the response")
    log_ratio = np.log(totals[useful] / energy[useful])
    return float(log_ratio.mean()), float(np.clip(6.0 * log_ratio.std(), 0.02, 3.0))


def _start_from_the_mean_shower(generator, samples) -> None:
    """Initialize the energy-share logits to the log of the mean energy fraction per cell, so the
    untrained generator draws the average shower instead of spreading the energy evenly (which
    would put every cell below the readout threshold, where no gradient flows)."""
    flat = np.asarray(samples, np.float64).reshape(len(samples), -1)
    fractions = (flat / np.maximum(flat.sum(axis=1, keepdims=True), 1e-12)).mean(axis=0)
    bias = generator.get_layer("output_dense").bias
    start = np.log(fractions + 1e-6 * fractions.max())
    bias.assign(np.append(start - start.mean(), 0.0).astype("float32"))


def build_conditional_gan(detector, train_conditions, train_samples=None, *, max_value=None,
                          latent_dim=64, generator_hidden=(512, 512), critic_hidden=(512, 256),
                          critic_steps=4, gradient_penalty=10.0, shower_features=True,
                          log_scale=1.0, energy_condition=None, extra_penalties=(), seed=0):
    """A dense conditional WGAN-GP for an image detector.

    Samples are normalized by ``LogScale(log_scale, log1p(max_value / log_scale))`` so cells span
    [0, ~1]; conditions by a :class:`ConditionEncoder` adapted to ``train_conditions``.
    ``max_value`` defaults to the largest cell of ``train_samples``. With ``energy_condition``
    (a condition name) the generator ends in an
    :class:`~ddsim_gan.models.networks.EnergyShareHead` scaled by that condition, its response
    fitted on ``train_samples``.
    """
    if max_value is None:
        if train_samples is None:
            raise ValueError("give max_value or train_samples")
        max_value = float(np.max(train_samples))
    # Preprocessing stays float32 under mixed precision: physical units need the range.
    encoder = ConditionEncoder.for_detector(detector, name="condition_encoder", dtype="float32")
    encoder.adapt(train_conditions)
    norm = float(np.log1p(max_value / log_scale))
    transform = LogScale(log_scale, norm, name="sample_transform", dtype="float32")
    features = (networks.ShowerFeatures.for_detector(detector, log_scale, norm)
                if shower_features and detector.axes else None)
    head, output_units = None, None
    if energy_condition is not None:
        if train_samples is None:
            raise ValueError("an energy head needs train_samples to fit its response")
        mean, spread = fit_response(detector, train_conditions, train_samples, energy_condition)
        head = networks.EnergyShareHead(
            detector.sample_shape, detector.condition_names.index(energy_condition), mean,
            detector.threshold, response_spread=spread, name="energy_share")
        output_units = math.prod(detector.sample_shape) + 1
    generator = networks.dense_generator(latent_dim, encoder.output_width, detector.sample_shape,
                                         hidden=generator_hidden, output_units=output_units)
    if head is not None:
        _start_from_the_mean_shower(generator, train_samples)
    critic = networks.dense_critic(detector.sample_shape, encoder.output_width,
                                   hidden=critic_hidden, features=features)
    penalties = [penalty_objects.GradientPenalty(gradient_penalty), *extra_penalties]
    return ConditionalGAN(generator, critic, encoder, transform, latent_dim,
                          threshold=detector.threshold, penalties=penalties,
                          critic_steps=critic_steps, seed=seed, output_head=head,
                          name=f"{detector.name}_gan")
