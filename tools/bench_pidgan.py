"""pidgan's WGAN_GP train step, timed the way ddsim_gan.benchmarks times ours.

Runs in a separate virtual environment (pidgan 0.2 pins tensorflow < 2.17 and numpy < 2):

    python -m venv /tmp/pidgan_venv
    /tmp/pidgan_venv/bin/pip install "tensorflow==2.16.2" "numpy<2" "scikit-learn<1.6" pidgan==0.2.0
    /tmp/pidgan_venv/bin/python tools/bench_pidgan.py --steps 50

Same MLP as ours (``layers`` x ``hidden``, LeakyReLU), one critic update per generator update,
gradient penalty 10, each network with its own RMSprop instance (pidgan hands back one shared
instance when both are given as the string "rmsprop"). Prints one JSON line.

pidgan splits every batch in two (``GAN._prepare_trainset``): the first half are the real
events, the second half's conditions feed the generator, and the second half's targets are
dropped. A batch of 2n therefore does the arithmetic of our batch of n (n real, n generated),
and ``rows_in_loss_per_s`` counts the real events the critic sees, as ours does.
"""

import argparse
import json
import statistics
import time

import numpy as np


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--output-dim", type=int, default=5)
    parser.add_argument("--n-conditions", type=int, default=4)
    parser.add_argument("--latent-dim", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import keras
    import tensorflow as tf
    from pidgan.algorithms import WGAN_GP
    from pidgan.players.discriminators import Discriminator
    from pidgan.players.generators import Generator

    rng = np.random.default_rng(0)
    x = rng.normal(size=(20 * args.batch_size, args.n_conditions)).astype(np.float32)
    y = (x[:, :1] + rng.normal(size=(len(x), args.output_dim))).astype(np.float32)
    generator = Generator(output_dim=args.output_dim, latent_dim=args.latent_dim,
                          num_hidden_layers=args.layers, mlp_hidden_units=args.hidden)
    critic = Discriminator(output_dim=1, num_hidden_layers=args.layers,
                           mlp_hidden_units=args.hidden, output_activation=None)
    gan = WGAN_GP(generator=generator, discriminator=critic, lipschitz_penalty=10.0)
    gan.build(input_shape=(None, args.n_conditions))
    gan.compile(generator_optimizer=keras.optimizers.RMSprop(1e-3),
                discriminator_optimizer=keras.optimizers.RMSprop(1e-3),
                generator_upds_per_batch=1, discriminator_upds_per_batch=1)
    data = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x)).batch(
        args.batch_size, drop_remainder=True).repeat()
    gan.fit(data, epochs=1, steps_per_epoch=5, verbose=0)
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        gan.fit(data, epochs=1, steps_per_epoch=args.steps, verbose=0)
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    print(json.dumps({"network": f"MLP {args.layers}x{args.hidden}, {args.output_dim} outputs, "
                                 f"{args.n_conditions} conditions",
                      "batch_size": args.batch_size, "tensorflow": tf.__version__,
                      "samples_per_s": args.steps * args.batch_size / seconds,
                      "rows_in_loss_per_s": args.steps * (args.batch_size // 2) / seconds}))


if __name__ == "__main__":
    main()
