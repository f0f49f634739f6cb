"""A small training run for tests/test_resume.py, run as a subprocess so it can be SIGKILLed.

It trains the tiny calorimeter GAN of conftest.py through :func:`ddsim_gan.training.fit` the way a
recipe does (shards streamed by ``make_dataset``, cosine-decay Adam with a weight average per
network, validation every epoch) and, when it completes, writes ``final.npz`` (generator and
critic weights) and ``history.json`` (the epochs this process trained) to the output directory.
It appends ``epoch step`` (global step) to ``progress.txt`` after every step, so a test can tell
where it is.

    python tests/resume_worker.py DATA_DIR OUTPUT_DIR [--kill-at-step N] [--kill-while-saving N]
                                  [--step-delay SECONDS]
"""

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

EPOCHS, STEPS, BATCH, CHECKPOINT_EVERY = 4, 6, 32, 4
SEED = 11


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("output_dir", type=Path)
    parser.add_argument("--kill-at-step", type=int, help="SIGKILL itself before global step N")
    parser.add_argument("--kill-while-saving", type=int,
                        help="SIGKILL itself while writing checkpoint number N (1-based), after "
                             "half of the file is on disk")
    parser.add_argument("--step-delay", type=float, default=0.0, help="sleep after each step")
    parser.add_argument("--checkpoint-every", type=int, default=CHECKPOINT_EVERY)
    args = parser.parse_args(argv)

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import keras
    import numpy as np

    from conftest import MiniCalo
    from ddsim_gan import recipe
    from ddsim_gan.data import find_shards, make_dataset, read_shards
    from ddsim_gan.models.builders import build_conditional_gan
    from ddsim_gan.training import fit

    keras.utils.set_random_seed(SEED)
    detector = MiniCalo()
    shards = find_shards(args.data_dir)
    conditions, samples = read_shards(shards, detector)
    gan = build_conditional_gan(detector, conditions, max_value=float(samples.max()),
                                latent_dim=8, generator_hidden=(32,), critic_hidden=(32,),
                                critic_steps=2, seed=SEED)
    settings = {"epochs": EPOCHS, "steps_per_epoch": STEPS}
    gan.compile(**recipe.wgan_optimizers(settings, learning_rate=1e-3), jit_compile=False)
    dataset = make_dataset(shards, BATCH, shuffle=True, seed=SEED, repeat=True)
    validation = make_dataset(shards[:1], BATCH, shuffle=False).take(2)

    args.output_dir.mkdir(parents=True, exist_ok=True)
    progress = open(args.output_dir / "progress.txt", "a", buffering=1)  # noqa: SIM115

    class Steps(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_begin(self, batch, logs=None):
            if args.kill_at_step is not None and self.epoch * STEPS + batch == args.kill_at_step:
                os.kill(os.getpid(), signal.SIGKILL)

        def on_train_batch_end(self, batch, logs=None):
            progress.write(f"{self.epoch} {self.epoch * STEPS + batch + 1}\n")
            time.sleep(args.step_delay)

    if args.kill_while_saving:
        save_weights = gan.save_weights
        saves = []

        def half_then_kill(filepath, **kwargs):
            save_weights(filepath, **kwargs)
            saves.append(filepath)
            if len(saves) == args.kill_while_saving:
                with open(filepath, "r+b") as f:
                    f.truncate(os.path.getsize(filepath) // 2)
                os.kill(os.getpid(), signal.SIGKILL)

        gan.save_weights = half_then_kill

    history = fit(gan, dataset, epochs=EPOCHS, steps_per_epoch=STEPS, output_dir=args.output_dir,
                  validation_data=validation, checkpoint_every_steps=args.checkpoint_every,
                  verbose=0, callbacks=[Steps()])
    weights = {f"generator_{i}": w.numpy() for i, w in enumerate(gan.generator.weights)}
    weights.update({f"critic_{i}": w.numpy() for i, w in enumerate(gan.critic.weights)})
    np.savez(args.output_dir / "final.npz", **weights)
    (args.output_dir / "history.json").write_text(json.dumps(
        {"epochs": history.epoch, "generator_loss": history.history["generator_loss"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
