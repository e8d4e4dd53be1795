"""tf.distribute: MirroredStrategy over 2 logical CPUs, MultiWorkerMirroredStrategy on loopback.

Each run is a subprocess: the logical-device split and the multi-worker runtime must be
set up before TensorFlow initialises, which the test process has already done.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest

from cytogan_tf.config import dump_toml

from training_helpers import tiny_config, write_tiny_shards


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_tiny_shards(tmp_path_factory.mktemp("data") / "shards", n_cells=32)


def _env():
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def test_mirrored_over_two_logical_cpus_trains(shards, tmp_path):
    run = tmp_path / "run"
    script = textwrap.dedent(f"""
        import json, sys
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        sys.path.insert(0, {str(os.path.dirname(__file__))!r})
        from training_helpers import tiny_config
        from cytogan_tf.training import train
        result = train(tiny_config("lsgan"), {str(shards)!r}, {str(run)!r}, steps=3,
                       strategy="mirrored", precision="float32", checkpoint_every=2, verbose=0)
        print(json.dumps(result.metrics))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, env=_env(), timeout=120)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    metrics = json.loads(done.stdout.decode().strip().splitlines()[-1])
    assert all(abs(v) < 1e6 for v in metrics.values()) and "d_loss" in metrics
    info = json.loads((run / "run.json").read_text())
    assert info["strategy"] == "mirrored" and info["num_replicas"] == 2 and info["step"] == 3
    assert (run / "checkpoints" / "ckpt-3.index").exists()


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def test_multiworker_two_processes_on_loopback(shards, tmp_path):
    config = tmp_path / "tiny.toml"
    config.write_text(dump_toml(tiny_config("lsgan")))
    run = tmp_path / "run"
    workers = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    procs = []
    for index in range(2):
        env = _env()
        env["TF_CONFIG"] = json.dumps({"cluster": {"worker": workers},
                                       "task": {"type": "worker", "index": index}})
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "cytogan_tf.cli.main", "train", "--config", str(config),
             "--data", str(shards), "--out", str(run), "--steps", "3", "--checkpoint-every", "2",
             "--sample-every", "3", "--precision", "float32", "--strategy", "multiworker", "--quiet"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env))
    outputs = []
    try:
        for p in procs:
            outputs.append(p.communicate(timeout=150))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (_, err) in zip(procs, outputs):
        assert p.returncode == 0, err.decode()[-3000:]
    info = json.loads((run / "run.json").read_text())
    assert info["strategy"] == "multiworker" and info["num_replicas"] == 2 and info["step"] == 3
    # the chief (worker 0) keeps checkpoints and samples; worker 1 wrote only to a temp dir
    assert sorted(p.name for p in (run / "checkpoints").glob("*.index")) == ["ckpt-2.index", "ckpt-3.index"]
    assert (run / "samples" / "step_000003.png").exists()
    assert not [p for p in run.rglob("*") if "worker" in p.name]
