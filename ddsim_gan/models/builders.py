"""Assemble a ConditionalGAN for a registry detector from a few architecture choices."""

from __future__ import annotations

import math
from statistics import NormalDist

import keras
import numpy as np

from ..data.preprocessing import ConditionEncoder, LogScale, QuantileTransform, Standardize
from . import components, layerwise, networks, penalties as penalty_objects
from .gan import ConditionalGAN


def fit_response(detector, conditions, samples, energy_condition) -> tuple[float, float]:
    """Mean and a bound on the spread of log(sum_E / E), for :class:`EnergyShareHead`.

    The bound is three standard deviations of the training data's log response, between 0.02
    and 3.
    """
    index = detector.condition_names.index(energy_condition)
    energy = np.asarray(conditions, np.float64)[:, index]
    totals = np.asarray(samples, np.float64).reshape(len(samples), -1).sum(axis=1)
    useful = (totals > 0) & (energy > 0)
    if not useful.any():
        raise ValueError("no event with positive energy and condition to fit the response")
    log_ratio = np.log(totals[useful] / energy[useful])
    return float(log_ratio.mean()), float(np.clip(3.0 * log_ratio.std(), 0.02, 3.0))


def _start_from_the_mean_shower(generator, samples) -> None:
    """Initialize the energy-share logits to the log of the mean energy fraction per cell, so the
    untrained generator draws the average shower instead of spreading the energy evenly (which
    would put every cell below the readout threshold, where no gradient flows)."""
    flat = np.asarray(samples, np.float64).reshape(len(samples), -1)
    fractions = (flat / np.maximum(flat.sum(axis=1, keepdims=True), 1e-12)).mean(axis=0)
    start = np.log(fractions + 1e-6 * fractions.max())
    names = [layer.name for layer in generator.layers]
    if "output_bias" in names:                      # layer-wise: a bias per cell, no response
        generator.get_layer("output_bias").bias.assign((start - start.mean()).astype("float32"))
    else:
        bias = generator.get_layer("output_dense").bias
        bias.assign(np.append(start - start.mean(), 0.0).astype("float32"))


def build_conditional_gan(detector, train_conditions, train_samples=None, *, max_value=None,
                          latent_dim=64, generator_hidden=(512, 512), critic_hidden=(512, 256),
                          critic_steps=4, gradient_penalty=10.0, shower_features=True,
                          log_scale=1.0, energy_condition=None, extra_penalties=(), seed=0,
                          critic_features=(), architecture="dense", layer_code=64,
                          scattered_scale=0.0, critic_policy=None, n_components=3,
                          noise_sigma=0.0, photostat=0.0, exact_energy=False,
                          threshold_band=0.0, deflection_energy=0.0, fragments_per_layer=0):
    """A conditional WGAN-GP for an image detector: dense networks, or with
    ``architecture="layerwise"`` the factorized ones of :mod:`~ddsim_gan.models.layerwise`
    (with ``scattered_scale`` > 0 MeV: per-cell noise and scattered deposits, see
    :class:`~ddsim_gan.models.networks.EnergyShareHead`).

    Samples are normalized by ``LogScale(log_scale, log1p(max_value / log_scale))`` so cells span
    [0, ~1]; conditions by a :class:`ConditionEncoder` adapted to ``train_conditions``.
    ``max_value`` defaults to the largest cell of ``train_samples``. With ``energy_condition``
    (a condition name) the generator ends in an
    :class:`~ddsim_gan.models.networks.EnergyShareHead` scaled by that condition, its response
    fitted on ``train_samples``. ``critic_features`` are extra feature layers of the normalized
    sample (e.g. :class:`~ddsim_gan.models.networks.SeedHitFeatures`) concatenated into the
    critic's input, or functions ``(log_scale, norm) -> layer`` that build them for the sample
    transform chosen here. ``architecture="components"`` draws each shower as ``n_components``
    parametric components rendered by a
    :class:`~ddsim_gan.models.components.ShowerComponentsHead` (with the readout's nominal
    ``noise_sigma`` and photo-statistics variance per unit ``photostat``) and
    uses the layer-wise critic; with ``exact_energy`` its deposits sum to the energy condition
    before the readout (the condition is the deposited energy, as DarkSHINE's), else to a
    learned response times it; ``threshold_band`` > 0 passes the gradient straight through for
    cells within that fraction below the readout threshold; ``deflection_energy`` > 0 (sample
    units) lets each component's centre move as 1 / its energy (a magnet's deflection);
    ``fragments_per_layer`` > 0 adds that many isolated-deposit slots per layer to the head.
    ``critic_policy`` overrides
    :func:`~ddsim_gan.models.networks.critic_precision` (float32 critics under mixed_float16).
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
            detector.threshold, response_spread=spread, scattered_scale=scattered_scale,
            name="energy_share")
        output_units = math.prod(detector.sample_shape) + 1
    if architecture in ("layerwise", "components"):
        if head is None or "layer" not in (detector.axes or ()):
            raise ValueError(f"the {architecture} architecture needs an energy_condition and "
                             "a 'layer' axis")
        layer_axis = detector.axes.index("layer")
    if architecture == "components":
        head = components.ShowerComponentsHead(
            detector.sample_shape, layer_axis, detector.cell_size, n_components,
            detector.condition_names.index(energy_condition),
            0.0 if exact_energy else mean, detector.threshold,
            0.0 if exact_energy else spread, noise_sigma, photostat, threshold_band,
            deflection_energy, fragments_per_layer=fragments_per_layer, name="shower_components",
            dtype="float32")                # physical units need the range
        generator = components.component_generator(latent_dim, encoder.output_width, head,
                                                   hidden=generator_hidden)
        generator.get_layer("component_params").bias.assign(
            components.initial_parameters(head, train_samples))
    elif architecture == "layerwise":
        generator = layerwise.layerwise_generator(
            latent_dim, encoder.output_width, detector.sample_shape, layer_axis,
            hidden=generator_hidden, layer_code=layer_code, cell_noise=bool(scattered_scale))
    elif architecture == "dense":
        generator = networks.dense_generator(latent_dim, encoder.output_width,
                                             detector.sample_shape, hidden=generator_hidden,
                                             output_units=output_units)
    else:
        raise ValueError(f"architecture must be 'dense', 'layerwise' or 'components', got "
                         f"{architecture!r}")
    if head is not None and architecture != "components":
        _start_from_the_mean_shower(generator, train_samples)
    all_features = [features, *[f if isinstance(f, keras.layers.Layer) else f(log_scale, norm)
                                for f in critic_features]]
    if architecture in ("layerwise", "components"):
        critic = layerwise.layerwise_critic(detector.sample_shape, encoder.output_width,
                                            layer_axis, hidden=critic_hidden,
                                            layer_code=layer_code, features=all_features,
                                            policy=critic_policy)
    else:
        critic = networks.dense_critic(detector.sample_shape, encoder.output_width,
                                       hidden=critic_hidden, features=all_features,
                                       policy=critic_policy)
    penalties = [penalty_objects.GradientPenalty(gradient_penalty), *extra_penalties]
    return ConditionalGAN(generator, critic, encoder, transform, generator.inputs[0].shape[-1],
                          threshold=detector.threshold, penalties=penalties,
                          critic_steps=critic_steps, seed=seed, output_head=head,
                          name=f"{detector.name}_gan")


def build_vector_gan(condition_encoder, train_conditions, train_samples, *, latent_dim=8,
                     generator_hidden=(128, 128, 128), critic_hidden=(128, 128, 128),
                     critic_steps=4, gradient_penalty=10.0, one_sided=True, n_quantiles=1000,
                     seed=0, name="vector_gan", output_head=None, sample_transform="quantile",
                     output_bound=None, extra_penalties=()):
    """A dense conditional WGAN-GP for a few numbers per event (vector outputs: S1, S2, f200;
    DLLs; one link of an auto-regressive chain).

    ``condition_encoder`` (a :class:`ConditionEncoder`, e.g. ``ConditionEncoder.for_detector``)
    is adapted to ``train_conditions``; the ``[n, k]`` outputs are Gaussianized by a
    :class:`QuantileTransform` adapted to ``train_samples`` (point masses kept), and the
    generator ends in that Gaussian space (squashed into the range the transform inverts by
    :class:`~ddsim_gan.models.networks.SoftClip`). ``one_sided`` uses the one-sided
    :class:`~ddsim_gan.models.penalties.LipschitzPenalty` instead of the two-sided gradient
    penalty, which traps the critic of a one-dimensional output (see its docstring).
    ``output_head`` (e.g. :class:`~ddsim_gan.models.heads.ThresholdTieHead`, adapted to the
    training samples) maps the generator's Gaussian units to physical samples instead of the
    inverse transform.

    ``sample_transform="standardize"`` uses a :class:`Standardize` instead, for outputs that are
    already of unit scale at every condition (an auto-regressive chain's standardized
    residuals): the critic then sees them linearly, so mass a generator leaks into the far tails
    costs it in proportion to the distance (in Gaussianized units the tails are compressed, and
    0.1 % of outliers can double a width), and the soft clip bounds the output at
    ``output_bound`` standard deviations (default 6). ``extra_penalties`` are added to the
    Lipschitz or gradient penalty.
    """
    samples = np.asarray(train_samples, np.float32)
    samples = samples.reshape(len(samples), -1)
    width = samples.shape[1]
    condition_encoder.adapt(train_conditions)
    if sample_transform == "quantile":
        transform = QuantileTransform(width, n_quantiles, name="sample_transform",
                                      dtype="float32").adapt(samples)
        # keep the output inside the range the transform inverts (else no gradient comes back)
        bound = output_bound or NormalDist().inv_cdf(1.0 - transform.epsilon)
    elif sample_transform == "standardize":
        transform = Standardize((width,), name="sample_transform", dtype="float32").adapt(samples)
        bound = output_bound or 6.0
    else:
        raise ValueError(f"sample_transform must be 'quantile' or 'standardize', got "
                         f"{sample_transform!r}")
    base = networks.dense_generator(
        latent_dim, condition_encoder.output_width, (width,), hidden=generator_hidden,
        output_activation="linear",
        output_units=None if output_head is None else output_head.input_units)
    generator = keras.Model(base.inputs, networks.SoftClip(bound, name="soft_clip")(base.output),
                            name="generator")
    critic = networks.dense_critic((width,), condition_encoder.output_width, hidden=critic_hidden)
    penalty = (penalty_objects.LipschitzPenalty if one_sided
               else penalty_objects.GradientPenalty)
    return ConditionalGAN(generator, critic, condition_encoder, transform, latent_dim,
                          penalties=[penalty(gradient_penalty), *extra_penalties],
                          critic_steps=critic_steps,
                          seed=seed, name=name, output_head=output_head)
