"""ddsim-gan: conditional GANs that replace Geant4 detector simulation.

The names a user needs:

- ``ddsim_gan.detectors.get(name)``: a detector with its reference simulator;
- ``ddsim_gan.data``: HDF5 shards in and out, tf.data pipelines;
- ``ddsim_gan.models.ConditionalGAN``: the Keras GAN with its losses and penalties;
- ``ddsim_gan.evaluation``: physics metrics, plots and reports;
- ``ddsim_gan.export``: SavedModels for TF Serving and distributed generation.
"""

__version__ = "0.1.0"
