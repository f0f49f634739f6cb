"""The condition spectrum recovered by NNLS (DarkSHINE seed 002, sampling step).

After training, the generator's response matrix A (column k: normalized histogram of the generated
observable for conditions drawn uniformly in condition bin k) and the observed histogram b give
bin weights X* = argmin_{X >= 0} ||A X - b||^2 (``scipy.optimize.nnls``). Conditions drawn from
the piecewise-uniform density with weights X* make the generated sample reproduce the observed
spectrum without knowing p(E) in advance.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.optimize import nnls


@dataclass
class ConditionSpectrum:
    """Piecewise-uniform density over ``edges`` with bin ``weights`` (summing to one)."""

    edges: np.ndarray
    weights: np.ndarray
    residual: float = float("nan")
    condition_index: int = 0
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        self.edges = np.asarray(self.edges, np.float64)
        weights = np.clip(np.asarray(self.weights, np.float64), 0.0, None)
        if weights.shape != (len(self.edges) - 1,) or weights.sum() <= 0:
            raise ValueError(f"need {len(self.edges) - 1} non-negative weights with a positive sum")
        widths = np.diff(self.edges)
        if (widths < 0).any() or (weights[widths == 0] > 0).any():
            raise ValueError("edges must increase (an empty bin may repeat an edge only with "
                             f"weight 0); got {self.edges.tolist()}")
        self.weights = weights / weights.sum()

    @classmethod
    def fit(cls, generate_observable, observed, condition_edges, observable_edges,
            n_per_bin=2000, seed=0):
        """Fit the weights.

        Args:
            generate_observable: ``conditions [n, 1] -> observable [n]`` (e.g. generated total
                energy).
            observed: the observed values of the observable (e.g. measured total energies).
        """
        rng = np.random.default_rng(seed)
        condition_edges = np.asarray(condition_edges, np.float64)
        observable_edges = np.asarray(observable_edges, np.float64)
        columns = []
        for low, high in zip(condition_edges[:-1], condition_edges[1:]):
            conditions = rng.uniform(low, high, (n_per_bin, 1)).astype(np.float32)
            histogram, _ = np.histogram(generate_observable(conditions), observable_edges)
            columns.append(histogram / n_per_bin)
        matrix = np.stack(columns, axis=1)
        target, _ = np.histogram(observed, observable_edges)
        target = target / len(observed)
        weights, residual = nnls(matrix, target)
        return cls(condition_edges, weights, float(residual),
                   info={"observable_edges": observable_edges.tolist(), "n_per_bin": n_per_bin})

    def sample(self, n, seed=None):
        """``n`` conditions ``[n, 1]`` (float32) from the fitted spectrum."""
        rng = np.random.default_rng(seed)
        bins = rng.choice(len(self.weights), size=n, p=self.weights)
        values = rng.uniform(self.edges[bins], self.edges[bins + 1])
        return values[:, None].astype(np.float32)

    def to_dict(self):
        return {"edges": self.edges.tolist(), "weights": self.weights.tolist(),
                "residual": self.residual, "condition_index": self.condition_index,
                "info": self.info}

    def save(self, path):
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path):
        return cls(**json.loads(Path(path).read_text()))
