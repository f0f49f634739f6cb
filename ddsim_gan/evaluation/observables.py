"""Shower observables: per-event physics quantities computed from detector samples (NumPy).

Samples are ``[n, *sample_shape]`` arrays. Functions that need to know which image axis is which
take the axis index *within one sample* (0 = first image axis); :func:`shower_observables` reads
the axes from the detector (``("x", "y", "layer")``, ``("layer", "x", "y")``, ``("x", "y")``...).

Coordinates along an image axis are cell centres measured from the image centre,
``(i - (n - 1) / 2) * cell_size`` in mm, so a shower centred on the image has centre 0. Centres,
widths and radial profiles weight cells by their energy clipped at zero (a generator may emit
small negative values); empty events have centre and width 0.
"""

from __future__ import annotations

import numpy as np

#: Axis names that are not spatial: no centre or width is computed along them.
LONGITUDINAL_AXES = ("layer", "time")


def _as_samples(samples) -> np.ndarray:
    array = np.asarray(samples, dtype=np.float64)
    if array.ndim < 2:
        raise ValueError(f"samples: shape {array.shape}, expected (N, ...) with at least one "
                         "sample axis")
    return array


def _sum_except(array: np.ndarray, keep: tuple[int, ...]) -> np.ndarray:
    """Sum over all axes of ``array`` except axis 0 and the (1-based) axes in ``keep``."""
    axes = tuple(a for a in range(1, array.ndim) if a not in keep)
    return array.sum(axis=axes) if axes else array


def _coordinates(n_cells: int, cell_size: float) -> np.ndarray:
    return (np.arange(n_cells) - (n_cells - 1) / 2.0) * float(cell_size)


def total_energy(samples) -> np.ndarray:
    """Sum of all cells of each event: ``[n]``."""
    array = _as_samples(samples)
    return array.reshape(len(array), -1).sum(axis=1)


def n_hits(samples, threshold: float = 0.0) -> np.ndarray:
    """Number of cells above ``threshold`` in each event: ``[n]`` (float for metric code)."""
    array = _as_samples(samples)
    return (array.reshape(len(array), -1) > threshold).sum(axis=1).astype(np.float64)


def sparsity(samples, threshold: float = 0.0) -> np.ndarray:
    """Fraction of cells at or below ``threshold`` in each event: ``[n]`` in [0, 1]."""
    array = _as_samples(samples)
    n_cells = int(np.prod(array.shape[1:]))
    return 1.0 - n_hits(array, threshold) / n_cells


def _moments(samples, axis_index: int, cell_size: float) -> tuple[np.ndarray, np.ndarray]:
    """Energy-weighted mean and second moment along one sample axis (0 for empty events)."""
    array = np.clip(_as_samples(samples), 0.0, None)
    if not 0 <= axis_index < array.ndim - 1:
        raise ValueError(f"axis_index {axis_index} out of range for samples of shape "
                         f"{array.shape[1:]}")
    profile = _sum_except(array, (axis_index + 1,))            # [n, n_cells]
    coords = _coordinates(profile.shape[1], cell_size)
    energy = profile.sum(axis=1)
    safe = np.where(energy > 0, energy, 1.0)
    mean = np.where(energy > 0, profile @ coords / safe, 0.0)
    second = np.where(energy > 0, profile @ coords**2 / safe, 0.0)
    return mean, second


def energy_centre(samples, axis_index: int, cell_size: float = 1.0) -> np.ndarray:
    """Energy-weighted mean cell-centre coordinate along ``axis_index``: ``[n]`` in mm."""
    return _moments(samples, axis_index, cell_size)[0]


def energy_width(samples, axis_index: int, cell_size: float = 1.0) -> np.ndarray:
    """Energy-weighted standard deviation of the cell-centre coordinate: ``[n]`` in mm."""
    mean, second = _moments(samples, axis_index, cell_size)
    return np.sqrt(np.clip(second - mean**2, 0.0, None))


def layer_energies(samples, layer_axis: int) -> np.ndarray:
    """Energy in each layer: ``[n, n_layers]`` (sums to :func:`total_energy`)."""
    return _sum_except(_as_samples(samples), (layer_axis + 1,))


def longitudinal_profile(samples, layer_axis: int) -> np.ndarray:
    """Mean energy per layer over events: ``[n_layers]``."""
    return layer_energies(samples, layer_axis).mean(axis=0)


def radial_energies(samples, xy_axes: tuple[int, int], cell_size=(1.0, 1.0),
                    bins=10) -> tuple[np.ndarray, np.ndarray]:
    """Energy per annulus around each event's own energy centre (all layers summed).

    Returns ``(edges [b + 1], energies [n, b])`` with radii in mm; ``bins`` is a number of equal
    bins from 0 to the largest possible radius, or the edges themselves.
    """
    array = _as_samples(samples)
    if np.isscalar(cell_size):
        cell_size = (cell_size, cell_size)
    a, b = xy_axes
    image = _sum_except(array, (a + 1, b + 1))
    if a > b:                                                  # keep image as [n, axis a, axis b]
        image = np.swapaxes(image, 1, 2)
    ca = _coordinates(image.shape[1], cell_size[0])
    cb = _coordinates(image.shape[2], cell_size[1])
    centre_a = energy_centre(array, a, cell_size[0])
    centre_b = energy_centre(array, b, cell_size[1])
    radius = np.hypot(ca[None, :, None] - centre_a[:, None, None],
                      cb[None, None, :] - centre_b[:, None, None])
    if np.ndim(bins) == 0:
        r_max = np.hypot(np.ptp(ca), np.ptp(cb)) + 1e-9
        edges = np.linspace(0.0, r_max, int(bins) + 1)
    else:
        edges = np.asarray(bins, dtype=np.float64)
    n_bins = len(edges) - 1
    index = np.clip(np.searchsorted(edges, radius, side="right") - 1, 0, n_bins - 1)
    inside = radius <= edges[-1]
    offsets = np.arange(len(image))[:, None, None] * n_bins
    energies = np.bincount((index + offsets)[inside],
                           weights=np.clip(image, 0.0, None)[inside],
                           minlength=len(image) * n_bins).reshape(len(image), n_bins)
    return edges, energies


def radial_profile(samples, xy_axes: tuple[int, int], cell_size=(1.0, 1.0),
                   bins=10) -> tuple[np.ndarray, np.ndarray]:
    """Mean energy vs distance from each event's energy centre: ``(edges, mean energy per bin)``."""
    edges, energies = radial_energies(samples, xy_axes, cell_size, bins)
    return edges, energies.mean(axis=0)


# ---- detector-aware ------------------------------------------------------------------------
def _axes(detector) -> tuple[str, ...]:
    return tuple(detector.axes)


def spatial_axes(detector) -> list[int]:
    """Indices of the detector's spatial image axes (all but "layer"/"time")."""
    return [i for i, name in enumerate(_axes(detector)) if name not in LONGITUDINAL_AXES]


def layer_axis(detector) -> int | None:
    """Index of the detector's "layer" axis, or ``None``."""
    axes = _axes(detector)
    return axes.index("layer") if "layer" in axes else None


def _cell_size(detector, index: int) -> float:
    sizes = getattr(detector, "cell_size", None)
    return float(sizes[index]) if sizes is not None else 1.0


def _check(samples, detector) -> np.ndarray:
    array = np.asarray(samples)
    shape = tuple(detector.sample_shape)
    if array.shape[1:] != shape:
        if array.ndim == 2 and array.shape[1] == int(np.prod(shape)):
            return array.reshape((len(array),) + shape)
        raise ValueError(f"samples: shape {array.shape}, expected (N, "
                         f"{', '.join(map(str, shape))}) for detector {detector.name!r}")
    return array


def shower_observables(samples, detector) -> dict[str, np.ndarray]:
    """Per-event observables of ``samples`` for ``detector``: name -> ``[n]`` array.

    Images: ``E_total``, ``n_hits``, ``sparsity``, ``centre_<axis>`` and ``width_<axis>`` (mm) for
    each spatial axis, and ``E_layer_XX`` for each layer when there is a "layer" axis. Vector
    outputs: one entry per ``detector.sample_names``.
    """
    array = _check(samples, detector)
    if detector.axes is None:
        names = detector.sample_names or tuple(f"s{i}" for i in range(array.shape[1]))
        flat = array.reshape(len(array), -1).astype(np.float64)
        return {name: flat[:, i] for i, name in enumerate(names)}
    flat = array.reshape(len(array), -1)
    axes = _axes(detector)
    hits = (flat > detector.threshold).sum(axis=1).astype(np.float64)
    result = {
        "E_total": flat.sum(axis=1, dtype=np.float64),
        "n_hits": hits,
        "sparsity": 1.0 - hits / flat.shape[1],
    }
    positive = np.maximum(array, 0)                  # clipped once, in the input precision
    for i in spatial_axes(detector):
        profile = _sum_except(positive, (i + 1,)).astype(np.float64)
        coords = _coordinates(profile.shape[1], _cell_size(detector, i))
        energy = profile.sum(axis=1)
        safe = np.where(energy > 0, energy, 1.0)
        mean = np.where(energy > 0, profile @ coords / safe, 0.0)
        second = np.where(energy > 0, profile @ coords**2 / safe, 0.0)
        result[f"centre_{axes[i]}"] = mean
        result[f"width_{axes[i]}"] = np.sqrt(np.clip(second - mean**2, 0.0, None))
    layer = layer_axis(detector)
    if layer is not None:
        energies = _sum_except(array, (layer + 1,)).astype(np.float64)
        for k in range(energies.shape[1]):
            result[f"E_layer_{k:02d}"] = energies[:, k]
    return result


def observable_units(detector) -> dict[str, str]:
    """Unit of every observable of :func:`shower_observables` (``""`` for counts/fractions)."""
    if detector.axes is None:
        names = detector.sample_names or ()
        units = detector.sample_units or ("",) * len(names)
        return dict(zip(names, units))
    unit = detector.sample_unit or ""
    axes = _axes(detector)
    units = {"E_total": unit, "n_hits": "", "sparsity": ""}
    for i in spatial_axes(detector):
        units[f"centre_{axes[i]}"] = "mm"
        units[f"width_{axes[i]}"] = "mm"
    layer = layer_axis(detector)
    if layer is not None:
        for k in range(detector.sample_shape[layer]):
            units[f"E_layer_{k:02d}"] = unit
    return units


def high_level_features(observables: dict[str, np.ndarray]) -> tuple[np.ndarray, list[str]]:
    """Stack observables into ``[n, f]`` features without exact linear duplicates.

    ``sparsity`` (a linear function of ``n_hits``) is dropped, and ``E_total`` is dropped when the
    layer energies it is the sum of are present, so covariance matrices stay invertible (FPD).
    """
    names = [k for k in observables if k != "sparsity"]
    if any(k.startswith("E_layer_") for k in names):
        names = [k for k in names if k != "E_total"]
    return np.stack([np.asarray(observables[k], np.float64) for k in names], axis=1), names


# ---- the seed's hits and occupancies (seed 003, SiW-ECAL) ----------------------------------
#: Seed 003's hit: a cell above this fraction of the hottest cell of its event.
SEED_HIT_FRACTION = 0.05


def seed_hits(samples, fraction: float = SEED_HIT_FRACTION) -> np.ndarray:
    """Boolean ``[n, *sample_shape]`` mask of seed 003's hits: cells above ``fraction`` of the
    hottest cell of their event (and above zero, so an empty event has none). The same
    definition as :meth:`ddsim_gan.detectors.siw_ecal.SiWECAL.hits`, for any image shape."""
    array = _as_samples(samples)
    peak = array.reshape(len(array), -1).max(axis=1).reshape((-1,) + (1,) * (array.ndim - 1))
    return (array > fraction * peak) & (array > 0)


def seed_hit_count(samples, fraction: float = SEED_HIT_FRACTION) -> np.ndarray:
    """Number of seed hits (:func:`seed_hits`) per event: ``[n]`` (float, like :func:`n_hits`)."""
    hits = seed_hits(samples, fraction)
    return hits.reshape(len(hits), -1).sum(axis=1).astype(np.float64)


def layer_hit(samples, layer_axis: int, fraction: float = SEED_HIT_FRACTION) -> np.ndarray:
    """Whether each layer of each event holds at least one seed hit: bool ``[n, n_layers]``."""
    hits = seed_hits(samples, fraction)
    if not 0 <= layer_axis < hits.ndim - 1:
        raise ValueError(f"layer_axis {layer_axis} out of range for samples of shape "
                         f"{hits.shape[1:]}")
    other = tuple(a for a in range(1, hits.ndim) if a != layer_axis + 1)
    return hits.any(axis=other) if other else hits


def layer_occupancy(samples, layer_axis: int, fraction: float = SEED_HIT_FRACTION) -> np.ndarray:
    """Per-layer occupancy: the fraction of events with at least one seed hit (:func:`seed_hits`,
    a cell above ``fraction`` of the event's hottest cell) in that layer: ``[n_layers]``.
    Seed 003's 2D WGAN never hit layer 1 (occupancy 0)."""
    return layer_hit(samples, layer_axis, fraction).mean(axis=0)


# ---- TPC pad-response moments (seed 001, NICA MPD; TPC-FastSim) -----------------------------
def gaussian_moments(samples, cell_size=(1.0, 1.0), names=("pad", "time")) -> dict:
    """Per-image Gaussian moments of 2D images ``[n, a, b]`` (TPC-FastSim, A. Maevskiy et al.,
    Eur. Phys. J. C 81 (2021) 599: the means, widths and covariance of the charge distribution
    along the two axes, and its sum).

    Coordinates are cell centres measured from the window's lower edge, ``(i + 1/2) * cell``,
    so a position is positive and its mean comparable in relative terms. Cells are weighted by
    their value clipped at zero; an empty image has every moment 0. Returns ``{"mean_<a>",
    "mean_<b>", "width_<a>", "width_<b>", "cov_<a>_<b>", "total"}``, each ``[n]`` (float64),
    with ``<a>``, ``<b>`` from ``names`` and widths the standard deviations.
    """
    array = np.clip(_as_samples(samples), 0.0, None)
    if array.ndim != 3:
        raise ValueError(f"gaussian_moments: samples of shape {array.shape[1:]}, expected 2D "
                         "images [n, a, b]")
    a, b = names
    ca = (np.arange(array.shape[1]) + 0.5) * float(cell_size[0])
    cb = (np.arange(array.shape[2]) + 0.5) * float(cell_size[1])
    total = array.sum(axis=(1, 2))
    safe = np.where(total > 0, total, 1.0)
    pa, pb = array.sum(axis=2), array.sum(axis=1)
    mean_a, mean_b = pa @ ca / safe, pb @ cb / safe
    var_a = np.clip(pa @ ca**2 / safe - mean_a**2, 0.0, None)
    var_b = np.clip(pb @ cb**2 / safe - mean_b**2, 0.0, None)
    cov = np.einsum("nij,i,j->n", array, ca, cb) / safe - mean_a * mean_b
    empty = total <= 0
    out = {f"mean_{a}": mean_a, f"mean_{b}": mean_b, f"width_{a}": np.sqrt(var_a),
           f"width_{b}": np.sqrt(var_b), f"cov_{a}_{b}": cov, "total": total}
    return {k: np.where(empty, 0.0, v) for k, v in out.items()}


def gaussian_moment_units(axis_units=("mm", "ns"), sample_unit="", names=("pad", "time")) -> dict:
    """Units of the :func:`gaussian_moments` keys, given the units of the two axes' cell sizes
    and of the cell values."""
    ua, ub = axis_units
    a, b = names
    return {f"mean_{a}": ua, f"mean_{b}": ub, f"width_{a}": ua, f"width_{b}": ub,
            f"cov_{a}_{b}": f"{ua} {ub}", "total": sample_unit}
