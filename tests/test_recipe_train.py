"""recipe.train: training batches streamed from the shards, validation batches from memory."""

from types import SimpleNamespace

import numpy as np
import tensorflow as tf

from ddsim_gan import detectors, recipe


def test_validation_is_the_first_training_rows_from_memory(tmp_path, monkeypatch):
    """Keras drops the prefetched validation iterator at every evaluation; over the shards'
    h5py generator that drop waited for the reader thread (7-36 s idle in most DarkSHINE
    epochs), so the validation batches must not come through the generator."""
    detector = detectors.get("darkside")
    conditions, samples = detector.simulate(1000, 0)
    data = recipe.RecipeData(conditions, samples, conditions[:10], samples[:10], samples[:10],
                             "reference")
    captured = {}

    def fake_fit(gan, dataset, **kwargs):
        captured.update(kwargs, dataset=dataset)

    monkeypatch.setattr(recipe, "_fit_or_exit", fake_fit)
    network = SimpleNamespace(count_params=lambda: 1)
    recipe.train(SimpleNamespace(generator=network, critic=network), detector, data,
                 dict(batch_size=64, epochs=1, steps_per_epoch=3, time_limit_minutes=None),
                 SimpleNamespace(output_dir=tmp_path, seed=1))
    validation = captured["validation_data"]
    # a known length: not the shards' generator, whose length tf.data cannot know
    assert int(validation.cardinality()) == 4
    assert int(captured["dataset"].cardinality()) == tf.data.UNKNOWN_CARDINALITY
    batches = list(validation.as_numpy_iterator())
    np.testing.assert_array_equal(np.concatenate([c for c, _ in batches]), conditions[:256])
    np.testing.assert_array_equal(np.concatenate([s for _, s in batches]), samples[:256])
    # the training stream still reads the shards written for it
    assert sorted(p.name for p in (tmp_path / "data").glob("*.h5"))
    first = next(iter(captured["dataset"]))
    assert first[0].shape == (64, conditions.shape[1]) and first[0].dtype == tf.float32
