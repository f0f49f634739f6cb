"""Physics evaluation: shower observables, distances with floors, classifier test, plots, report.

``evaluate(detector, conditions, ref, gen, ref2, bars=...)`` runs everything of DESIGN.md
"Metrics" and ``write_report`` writes ``metrics.json`` and ``report.md``. ``MetricMonitor``
logs cheap physics metrics during training and keeps the best generator; ``ShowerLibrary`` is
the stored-shower baseline that ``compare_generators`` puts beside the GAN. The classifier and
callback (Keras), plotting (matplotlib) and library (SciPy k-d tree) modules are imported on
first use.
"""

from .metrics import (EPSILON, MetricResult, binned_js, binned_kl, compare,
                      efficiency_mean_deviation, efficiency_ratios, frechet_distance,
                      frechet_physics_distance, kernel_physics_distance, ks_statistic,
                      mmd_poly_unbiased, separation_power, shared_edges, standardize,
                      wasserstein_over_sigma)
from .observables import (energy_centre, energy_width, high_level_features, layer_energies,
                          longitudinal_profile, n_hits, observable_units, radial_energies,
                          radial_profile, shower_observables, sparsity, total_energy)
from .report import compare_generators, evaluate, generator_nbytes, make_plots, write_report

_LAZY = {
    "classifier_two_sample_test": "classifier", "auc_mann_whitney": "classifier",
    "plot_histogram_ratio": "plots", "plot_profiles": "plots", "plot_average_images": "plots",
    "plot_conditional_means": "plots", "plot_efficiency_map": "plots",
    "MetricMonitor": "callbacks", "ShowerLibrary": "library",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "MetricResult", "EPSILON", "compare", "wasserstein_over_sigma", "binned_kl", "binned_js",
    "ks_statistic", "separation_power", "shared_edges", "efficiency_ratios",
    "efficiency_mean_deviation", "frechet_distance", "frechet_physics_distance",
    "kernel_physics_distance", "mmd_poly_unbiased", "standardize",
    "total_energy", "n_hits", "sparsity", "energy_centre", "energy_width", "layer_energies",
    "longitudinal_profile", "radial_energies", "radial_profile", "shower_observables",
    "observable_units", "high_level_features",
    "evaluate", "make_plots", "write_report", "compare_generators", "generator_nbytes", *_LAZY,
]
