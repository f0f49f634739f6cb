"""The ConditionalGAN's train_step under MultiWorkerMirroredStrategy: two worker processes on
this host (gRPC on 127.0.0.1, ring all-reduce on CPU) train the tiny GAN for a few steps, the
chief writes a checkpoint, and both workers end with the same weights."""

import hashlib
import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

pytestmark = pytest.mark.slow

# the tiny GAN; one critic step per step keeps the traced train step, the bulk of the run, small
GAN = dict(latent_dim=4, generator_hidden=(16,), critic_hidden=(16,), critic_steps=1, seed=3)

WORKER = textwrap.dedent("""
    import hashlib, json, os, shutil, sys
    import numpy as np
    import tensorflow as tf

    tests, out = sys.argv[1:3]
    task = json.loads(os.environ["TF_CONFIG"])["task"]
    communication = tf.distribute.experimental.CommunicationOptions(
        implementation=tf.distribute.experimental.CommunicationImplementation.RING)
    # created first: the strategy starts this worker's gRPC server and waits for the other
    strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=communication)

    import keras
    keras.config.disable_traceback_filtering()
    sys.path.insert(0, tests)
    from conftest import MiniCalo
    from ddsim_gan.data import dataset_from_arrays
    from ddsim_gan.models.builders import build_conditional_gan

    detector = MiniCalo()
    conditions, samples = detector.simulate(128, seed=0)
    keras.utils.set_random_seed(1)
    with strategy.scope():
        gan = build_conditional_gan(detector, conditions, max_value=float(samples.max()),
                                    **%(gan)r)
        gan.compile(generator_optimizer=keras.optimizers.Adam(1e-2),
                    critic_optimizer=keras.optimizers.Adam(1e-2))
    # global batch 32: each worker's replica gets 16 rows of it (auto-sharding by data)
    data = dataset_from_arrays(conditions, samples, 32, shuffle=False, repeat=True)
    before = [w.numpy().copy() for w in gan.generator.weights + gan.critic.weights]
    history = gan.fit(data, epochs=1, steps_per_epoch=3, verbose=0, shuffle=False)
    weights = [w.numpy() for w in gan.generator.weights + gan.critic.weights]

    # Every worker writes (saving may run collectives); only the chief's copy is kept.
    checkpoint = tf.train.Checkpoint(generator=gan.generator, critic=gan.critic,
                                     generator_optimizer=gan.generator_optimizer,
                                     critic_optimizer=gan.critic_optimizer)
    chief = task["index"] == 0
    directory = os.path.join(out, "checkpoint" if chief else f"worker-{task['index']}-tmp")
    checkpoint.write(os.path.join(directory, "gan"))
    if not chief:
        shutil.rmtree(directory)

    digest = hashlib.sha256(b"".join(np.ascontiguousarray(w).tobytes() for w in weights))
    report = {"checksum": digest.hexdigest(), "replicas": strategy.num_replicas_in_sync,
              "moved": max(float(np.max(np.abs(a - b))) for a, b in zip(weights, before)),
              "iterations": int(gan.critic_optimizer.iterations.numpy()),
              "logs": {k: float(v[-1]) for k, v in history.history.items()}}
    with open(os.path.join(out, f"worker-{task['index']}.json"), "w") as f:
        json.dump(report, f)
""") % {"gan": GAN}


def _checksum(gan):
    weights = gan.generator.weights + gan.critic.weights
    return hashlib.sha256(b"".join(np.ascontiguousarray(w.numpy()).tobytes()
                                   for w in weights)).hexdigest()


def _free_ports(n):
    """Ports the OS hands out for port 0 (closed again right away: a small race we accept)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def test_two_workers_train_to_the_same_weights(tmp_path):
    from conftest import ROOT

    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(2)]}
    workers = []
    try:
        for index in range(2):
            env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "",
                   "TF_CONFIG": json.dumps({"cluster": cluster,
                                            "task": {"type": "worker", "index": index}})}
            log = open(tmp_path / f"worker-{index}.log", "w")
            workers.append((subprocess.Popen(
                [sys.executable, str(script), str(ROOT / "tests"), str(tmp_path)],
                stdout=log, stderr=subprocess.STDOUT, env=env), log))
        codes = [process.wait(timeout=240) for process, _ in workers]
    finally:
        for process, log in workers:
            if process.poll() is None:
                process.kill()
                process.wait()
            log.close()
    logs = "\n".join((tmp_path / f"worker-{i}.log").read_text()[-3000:] for i in range(2))
    assert codes == [0, 0], logs
    assert (tmp_path / "checkpoint" / "gan.index").is_file()
    assert not (tmp_path / "worker-1-tmp").exists()
    reports = [json.loads((tmp_path / f"worker-{i}.json").read_text()) for i in range(2)]
    assert [r["replicas"] for r in reports] == [2, 2]
    assert reports[0]["moved"] > 0 and reports[0]["iterations"] == 3
    assert reports[0]["checksum"] == reports[1]["checksum"], reports
    assert reports[0]["logs"] == reports[1]["logs"]

    # the chief's checkpoint holds the trained weights
    from conftest import MiniCalo
    from ddsim_gan.models.builders import build_conditional_gan

    conditions, samples = MiniCalo().simulate(128, seed=0)
    gan = build_conditional_gan(MiniCalo(), conditions, max_value=float(samples.max()), **GAN)
    assert _checksum(gan) != reports[0]["checksum"]
    tf.train.Checkpoint(generator=gan.generator, critic=gan.critic).read(
        str(tmp_path / "checkpoint" / "gan")).expect_partial()
    assert _checksum(gan) == reports[0]["checksum"]
