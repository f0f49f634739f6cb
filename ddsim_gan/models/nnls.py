"""Non-negative least squares inside the TensorFlow graph.

``nnls(A, b)`` solves argmin_x ||A x - b||^2 subject to x >= 0 with the active-set algorithm of
C. L. Lawson and R. J. Hanson, *Solving Least Squares Problems* (1974), ch. 23 — the algorithm
behind ``scipy.optimize.nnls`` — written with ``tf.while_loop`` so a training step can call it
without a Python callback. It works in float64 and on small dense problems (tens of columns),
which is what the NNLS penalty of seed 002 needs.

The unconstrained sub-problem on the passive set P is solved through the normal equations with
the inactive rows and columns replaced by the identity, which keeps every shape static:
``(M_PP + I_not_P) z = (A^T b)_P``, ``z_not_P = 0``.
"""

from __future__ import annotations

import tensorflow as tf


def _passive_solve(gram, atb, passive):
    """Least squares restricted to the passive columns; zero elsewhere."""
    mask = tf.cast(passive, gram.dtype)
    outer = mask[:, None] * mask[None, :]
    system = gram * outer + tf.linalg.diag(1.0 - mask)
    # Tiny ridge: columns that are nearly parallel make the restricted system ill-conditioned.
    system += tf.linalg.diag(mask) * 1e-12 * tf.reduce_max(tf.linalg.diag_part(gram))
    solution = tf.linalg.solve(system, (atb * mask)[:, None])[:, 0]
    return solution * mask


def nnls(matrix, target, max_iterations: int | None = None, tolerance: float | None = None):
    """Solve ``argmin_x ||matrix @ x - target||_2`` with ``x >= 0``.

    Args:
        matrix: ``[m, n]`` tensor.
        target: ``[m]`` tensor.
        max_iterations: outer iterations (default ``3 n``, as in scipy).
        tolerance: dual-feasibility tolerance (default ``10 max(m, n) eps ||A||_1 ||b||_inf``).

    Returns:
        ``(x, residual_norm)`` in float64, with ``x`` of shape ``[n]``.
    """
    a = tf.convert_to_tensor(matrix, tf.float64)
    b = tf.convert_to_tensor(target, tf.float64)
    n = a.shape[1] if a.shape[1] is not None else tf.shape(a)[1]
    gram = tf.matmul(a, a, transpose_a=True)
    atb = tf.linalg.matvec(a, b, transpose_a=True)
    if tolerance is None:
        eps = tf.constant(2.220446049250313e-16, tf.float64)
        size = tf.cast(tf.maximum(tf.shape(a)[0], tf.shape(a)[1]), tf.float64)
        tolerance = 10.0 * size * eps * tf.reduce_max(tf.reduce_sum(tf.abs(a), axis=0)) * \
            tf.reduce_max(tf.abs(b))
    max_iterations = 3 * n if max_iterations is None else max_iterations

    def dual(x):
        return atb - tf.linalg.matvec(gram, x)

    def outer_condition(x, passive, iteration):
        w = dual(x)
        candidates = tf.logical_and(tf.logical_not(passive), w > tolerance)
        return tf.logical_and(tf.reduce_any(candidates), iteration < max_iterations)

    def outer_body(x, passive, iteration):
        w = dual(x)
        scores = tf.where(passive, tf.constant(-float("inf"), tf.float64), w)
        passive = tf.logical_or(passive, tf.one_hot(tf.argmax(scores), n, on_value=True,
                                                      off_value=False, dtype=tf.bool))
        z = _passive_solve(gram, atb, passive)

        def inner_condition(x, z, passive):
            return tf.reduce_any(tf.logical_and(passive, z <= 0.0))

        def inner_body(x, z, passive):
            # Step from x towards z until the first passive variable reaches zero.
            blocking = tf.logical_and(passive, z <= 0.0)
            ratios = tf.where(blocking, x / tf.where(blocking, x - z, 1.0),
                              tf.constant(float("inf"), tf.float64))
            step = tf.reduce_min(ratios)
            x = x + step * (z - x)
            passive = tf.logical_and(passive, x > tolerance)
            x = tf.where(passive, x, 0.0)
            return x, _passive_solve(gram, atb, passive), passive

        x, z, passive = tf.while_loop(inner_condition, inner_body, (x, z, passive))
        return z, passive, iteration + 1

    x0 = tf.zeros([n], tf.float64)
    passive0 = tf.zeros([n], tf.bool)
    x, _, _ = tf.while_loop(outer_condition, outer_body, (x0, passive0, tf.constant(0)))
    x = tf.stop_gradient(x)
    residual = tf.norm(tf.linalg.matvec(a, x) - b)
    return x, residual
