"""Condition encoders that add what the detector's geometry implies, as Keras layers.

A network given a calorimeter entry point (x, y, z) and momentum (px, py, pz) has to find out by
itself where in the image the particle lands: the image frame is aligned with the cell grid, so
the impact point's offset from the image centre is the entry point propagated to the face,
modulo the cell size, a sawtooth of period 20 mm over a range of 6 m that no dense layer of
standardized inputs resolves. :class:`ImpactPointEncoder` computes it (and the slopes px/pz,
py/pz) in-graph with ``keras.ops``, exactly as the reference simulator does
(:meth:`ddsim_gan.detectors.lhcb_ecal.LHCbECAL.impact_point`), and hands the conditions plus these
columns to a :class:`~ddsim_gan.data.preprocessing.ConditionEncoder`. Being a layer of the
generator, it is saved with it and runs under every Keras backend.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from .preprocessing import ConditionEncoder

_PACKAGE = "ddsim_gan"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ImpactPointEncoder(keras.layers.Layer):
    """Physical (x, y, z, px, py, pz) -> encoded (those six, tx, ty, impact offset u, v, and the
    incidence direction's frame: |t|, ux, uy, offset along and across it).

    With tx = px / pz, ty = py / pz, a face tilted by ``tilt_rad`` about the x axis at
    z_face(y) = ``z_face_mm`` + y tan(tilt), the face point is (x + L tx, y + L ty) with
    L = (z_face(y) - z) / (1 - ty tan(tilt)), and the impact offset in the image frame is the face
    point minus ``cell_mm`` round(face point / ``cell_mm``) (in [-cell/2, cell/2]). The shower
    elongates along the projected direction (ux, uy) = (tx, ty) / |t| ((1, 0) at normal
    incidence), and shower asymmetries are measured along it, so the encoder adds |t|, ux, uy
    and the impact offset along (u ux + v uy) and across (v ux - u uy) it: a direction angle that
    turns fast where |t| is small is hard for a network to compute from standardized slopes.
    The fifteen columns are standardized (pz by its logarithm) by an inner
    ``ConditionEncoder`` fitted by :meth:`adapt`. ``n_inputs`` is 6: the sampler still takes
    the six physical conditions.
    """

    N_DERIVED = 9

    def __init__(self, cell_mm=20.0, z_face_mm=12_620.0, tilt_rad=3.601e-3, **kwargs):
        super().__init__(**kwargs)
        self.cell_mm = float(cell_mm)
        self.z_face_mm = float(z_face_mm)
        self.tilt_rad = float(tilt_rad)
        n = 6 + self.N_DERIVED
        self.encoder = ConditionEncoder([0] * n, log=[i == 5 for i in range(n)],
                                        name="columns", dtype=self.dtype_policy)

    @classmethod
    def for_detector(cls, detector, **kwargs):
        """The LHCb ECAL's geometry (:mod:`ddsim_gan.detectors.lhcb_ecal`)."""
        from ..detectors import lhcb_ecal

        if tuple(detector.condition_names) != ("x", "y", "z", "px", "py", "pz"):
            raise ValueError(f"ImpactPointEncoder: detector {detector.name!r} has conditions "
                             f"{detector.condition_names}, expected (x, y, z, px, py, pz)")
        return cls(lhcb_ecal.CELL_MM, lhcb_ecal.Z_FACE_MM, lhcb_ecal.TILT_RAD, **kwargs)

    @property
    def n_inputs(self):
        return 6

    @property
    def output_width(self):
        return self.encoder.output_width

    def derived(self, conditions):
        """``[n, 6]`` physical conditions -> ``[n, 15]``: the conditions, tx, ty, u, v, |t|, ux,
        uy, along, across."""
        c = ops.cast(conditions, "float32")
        x, y, z, px, py, pz = (c[:, i] for i in range(6))
        tx, ty = px / pz, py / pz
        tan_tilt = float(np.tan(self.tilt_rad))
        lever = (self.z_face_mm + y * tan_tilt - z) / (1.0 - ty * tan_tilt)
        face_x, face_y = x + lever * tx, y + lever * ty
        u = face_x - self.cell_mm * ops.round(face_x / self.cell_mm)
        v = face_y - self.cell_mm * ops.round(face_y / self.cell_mm)
        slope = ops.sqrt(tx * tx + ty * ty)
        safe = ops.maximum(slope, 1e-9)
        ux = ops.where(slope > 0, tx / safe, 1.0)
        uy = ops.where(slope > 0, ty / safe, 0.0)
        along, across = u * ux + v * uy, v * ux - u * uy
        return ops.concatenate([c, ops.stack([tx, ty, u, v, slope, ux, uy, along, across],
                                             axis=1)], axis=1)

    def build(self, input_shape):
        self.encoder.build((input_shape[0], 6 + self.N_DERIVED))

    def adapt(self, conditions):
        self.encoder.adapt(ops.convert_to_numpy(self.derived(
            ops.convert_to_tensor(np.asarray(conditions, "float32")))))
        return self

    def call(self, conditions):
        return self.encoder(self.derived(conditions))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.output_width)

    def get_config(self):
        return {**super().get_config(), "cell_mm": self.cell_mm, "z_face_mm": self.z_face_mm,
                "tilt_rad": self.tilt_rad}
