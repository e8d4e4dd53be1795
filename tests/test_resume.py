"""Resume: a run continued from its checkpoint matches an uninterrupted one, also after SIGKILL."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cytogan_tf.config import dump_toml
from cytogan_tf.training import train

from training_helpers import tiny_config, write_tiny_shards


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_tiny_shards(tmp_path_factory.mktemp("data") / "shards")


def checkpoint_tensors(run_dir, path=None):
    import tensorflow as tf

    path = path or tf.train.latest_checkpoint(str(Path(run_dir) / "checkpoints"))
    reader = tf.train.load_checkpoint(path)
    return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()
            if not k.startswith("_CHECKPOINTABLE_OBJECT_GRAPH")}


def counters(tensors):
    """step and both optimizers' iteration counts from a checkpoint."""
    pick = lambda prefix: int(next(v for k, v in tensors.items() if k.startswith(prefix)))
    return (pick("step/"), pick("g_optimizer/_iterations"), pick("d_optimizer/_iterations"))


def test_two_resumed_halves_equal_one_uninterrupted_run(shards, tmp_path):
    # BEGAN: besides weights and Adam moments, k_t, the noise seed state and the weights'
    # moving average (train.ema_decay) must carry over.
    cfg = tiny_config("began", steps_per_epoch=3, ema_decay=0.9)
    kw = dict(precision="float32", verbose=0, sample_every=100, checkpoint_every=100, seed=3)
    train(cfg, shards, tmp_path / "whole", steps=8, **kw)
    train(cfg, shards, tmp_path / "halves", steps=5, **kw)
    result = train(cfg, shards, tmp_path / "halves", steps=8, resume=True, **kw)
    assert result.step == 8
    whole, halves = checkpoint_tensors(tmp_path / "whole"), checkpoint_tensors(tmp_path / "halves")
    assert counters(whole) == counters(halves) == (8, 8, 8)
    assert whole.keys() == halves.keys()
    assert int(whole["weight_average/updates/.ATTRIBUTES/VARIABLE_VALUE"]) == 8
    moments = [k for k in whole if k.startswith("d_optimizer/_variables/")]
    assert moments and any(np.abs(whole[k]).max() > 0 for k in moments)
    for key, value in whole.items():
        if isinstance(value, np.ndarray) and value.dtype.kind == "f":
            np.testing.assert_allclose(halves[key], value, rtol=1e-5, atol=1e-6, err_msg=key)
    info = json.loads((tmp_path / "halves" / "run.json").read_text())
    assert info["step"] == 8 and info["seed"] == 3


@pytest.fixture
def live_sigint():
    """SIGINT as a terminal delivers it. A job a shell starts in the background (`cmd &`,
    as CI scripts may be) inherits SIGINT *ignored*, and so would the training process
    these tests start: it would never see the Ctrl-C they send."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def _cli(*args):
    return [sys.executable, "-m", "cytogan_tf.cli.main", *map(str, args)]


ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def _start_endless_run(shards, tmp_path):
    """A `cytogan train` process that checkpoints every 2 steps and would run for ages."""
    config = tmp_path / "tiny.toml"
    config.write_text(dump_toml(tiny_config("lsgan", steps_per_epoch=2)))
    run = tmp_path / "run"
    proc = subprocess.Popen(
        _cli("train", "--config", config, "--data", shards, "--out", run, "--steps", 100000,
             "--checkpoint-every", 2, "--sample-every", 1000, "--precision", "float32", "--quiet"),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV)
    return proc, run


def test_sigkill_then_resume_continues_from_the_last_checkpoint(shards, tmp_path):
    proc, run = _start_endless_run(shards, tmp_path)
    state_file = run / "checkpoints" / "checkpoint"
    deadline = time.time() + 90
    try:
        while not state_file.exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.time() < deadline, "no checkpoint within 90 s"
            time.sleep(0.1)
        time.sleep(0.5)  # let it get into the middle of later steps / saves
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stderr.close()

    import tensorflow as tf

    latest = tf.train.latest_checkpoint(str(run / "checkpoints"))
    killed = checkpoint_tensors(run, latest)  # complete and readable, never a half-written one
    step, g_it, d_it = counters(killed)
    assert step >= 2 and step % 2 == 0 and latest.endswith(f"ckpt-{step}")
    assert (g_it, d_it) == (step, step)

    target = step + 4
    done = subprocess.run(
        _cli("train", "--out", run, "--data", shards, "--resume", "--steps", target, "--quiet"),
        capture_output=True, env=ENV, timeout=120)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    resumed = checkpoint_tensors(run)
    assert counters(resumed) == (target, target, target)
    info = json.loads((run / "run.json").read_text())
    assert info["step"] == target and info["precision"] == "float32"


def test_ctrl_c_names_the_kept_checkpoint_and_the_resume_command(shards, tmp_path, live_sigint):
    proc, run = _start_endless_run(shards, tmp_path)
    deadline = time.time() + 90
    try:
        while not (run / "checkpoints" / "checkpoint").exists():
            assert proc.poll() is None and time.time() < deadline
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = err.decode()
    assert proc.returncode == 1, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("Error: interrupted; the checkpoint of step "), err[-2000:]
    assert f"--out {run} --resume" in last
    # The first Ctrl-C stops between steps and saves the step reached, whether or not it
    # was a checkpoint step: the checkpoint, run.json and the message agree on it.
    step = int(last.split("the checkpoint of step ")[1].split()[0])
    assert counters(checkpoint_tensors(run)) == (step, step, step)
    assert json.loads((run / "run.json").read_text())["step"] == step


def test_sigint_inside_train_stops_between_steps_and_keeps_the_step_reached(shards, tmp_path, live_sigint):
    import tensorflow as tf

    def interrupt_at_third_batch(ds):
        # The signal comes from a tf.data thread while the main thread runs TensorFlow,
        # as a Ctrl-C does: Python runs the handler in the main thread between bytecodes.
        def maybe_interrupt(i, batch):
            if int(i) == 3:
                signal.raise_signal(signal.SIGINT)
            return i
        counted = ds.enumerate().map(lambda i, batch: (
            tf.py_function(maybe_interrupt, [i, 0], tf.int64), batch))
        return counted.map(lambda i, batch: batch)

    cfg = tiny_config("lsgan", steps_per_epoch=4)
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(cfg, shards, run, steps=100000, precision="float32", verbose=0, sample_every=1000,
              checkpoint_every=1000, seed=0, dataset_hook=interrupt_at_third_batch)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    info = json.loads((run / "run.json").read_text())
    step = info["step"]
    assert 1 <= step < 100, step  # stopped within a few steps of the signal, not at the end
    assert counters(checkpoint_tensors(run)) == (step, step, step)
    assert info["checkpoint"].endswith(f"ckpt-{step}")


def test_second_sigint_raises_at_once_and_the_handler_is_restored(live_sigint):
    from cytogan_tf.interrupt import stop_on_first_sigint

    requests = []
    with pytest.raises(KeyboardInterrupt):
        with stop_on_first_sigint(lambda: requests.append(1)) as installed:
            assert installed
            signal.raise_signal(signal.SIGINT)
            assert requests == [1]  # the first one only asked for a stop
            signal.raise_signal(signal.SIGINT)
            time.sleep(1)  # not reached: the second one interrupts
    assert requests == [1]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
