"""Adversarial losses: one object each, exposing the critic side and the generator side."""

from __future__ import annotations

import keras
from keras import ops

_PACKAGE = "ddsim_gan"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class WassersteinLoss:
    """Wasserstein GAN loss (M. Arjovsky, S. Chintala, L. Bottou, arXiv:1701.07875, eq. 3).

    critic:    L_D = E[D(x_fake)] - E[D(x_real)]
    generator: L_G = -E[D(x_fake)]

    ``E[D(x_real)] - E[D(x_fake)]`` estimates the Wasserstein-1 distance once the critic is
    1-Lipschitz, which :class:`~ddsim_gan.models.penalties.GradientPenalty` enforces softly.
    Averages are over the replica's local batch; the GAN divides by the number of replicas.
    """

    name = "wasserstein"

    def critic(self, real_scores, fake_scores):
        return ops.mean(fake_scores) - ops.mean(real_scores)

    def generator(self, fake_scores):
        return -ops.mean(fake_scores)

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
