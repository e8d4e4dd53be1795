"""The training runtime: shards -> `fit()` on a GAN -> a run directory you can resume.

A run directory holds `config.toml` (the resolved config), `run.json` (arch, precision,
seed, the dataset's info incl. normalisation, latest step), `checkpoints/` (a
`tf.train.CheckpointManager` over both networks, both optimizers, the step counter and
the model's `extra_state()`: seed-generator state, BEGAN's k_t), `samples/step_*.png`
(generated from one fixed z, so sheets are comparable over time) and `logs/` (TensorBoard).

[train] keys read here (defaults in TRAIN_DEFAULTS): batch_size, steps, seed, precision,
sample_every, checkpoint_every, log_every, steps_per_epoch (steps per fit() epoch: metrics
are running means over it), max_checkpoints, sample_count (cells per sample sheet), augment.

Keras weights files do not hold optimizer state, so resume goes through tf.train.Checkpoint.
The data stream is positioned by skipping the batches already consumed, which makes a
resumed run see exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import keras
import numpy as np

from . import __version__
from .config import dump_toml, load_config
from .errors import ConfigError, DataError, TrainingDivergedError
from .interrupt import stop_on_first_sigint
from .io_utils import atomic_write_json, atomic_write_text

STRATEGIES = ("default", "mirrored", "multiworker")
RUN_JSON = "run.json"
CONFIG_TOML = "config.toml"
LABELS_JSON = "labels.json"  # weak-label classes, index order
CHECKPOINT_DIR = "checkpoints"
SAMPLES_DIR = "samples"
STOP_MESSAGE = "Ctrl-C: saving the step reached, then stopping (Ctrl-C again to stop at once)"
LOGS_DIR = "logs"

# Defaults for [train] keys this module reads; a config may set any of them.
TRAIN_DEFAULTS = {
    "batch_size": 64,
    "steps": 1000,
    "seed": 0,
    "precision": "auto",
    "sample_every": 500,
    "checkpoint_every": 500,
    "log_every": 50,
    "steps_per_epoch": 100,
    "max_checkpoints": 3,
    "sample_count": 64,
    "augment": False,
    "head_lr": 0.0,  # > 0: D's heads train at this rate by their own Adam (models.make_head_optimizer)
    "ema_decay": 0.0,  # > 0: export the moving average of G's and E's weights (models.weight_average)
}


@dataclasses.dataclass
class TrainResult:
    run_dir: Path
    step: int
    precision: str
    metrics: dict[str, float]
    checkpoint: str | None
    images_per_second: float


@dataclasses.dataclass
class LoadedRun:
    gan: Any
    config: dict
    step: int
    dataset_info: dict
    run_dir: Path
    run_info: dict


# --------------------------------------------------------------------------- public API

def train(cfg: Mapping[str, Any], data_dir, out_dir, *, steps: int | None = None,
          resume: bool = False, precision: str | None = None, strategy: str = "default",
          seed: int | None = None, sample_every: int | None = None,
          checkpoint_every: int | None = None, log_every: int | None = None,
          verbose: int = 1, dataset_hook: Callable | None = None) -> TrainResult:
    """Train the GAN described by `cfg` on the shards in `data_dir` into run dir `out_dir`.

    Trains until the step counter reaches `steps` (total, not additional). With
    `resume=True` continues the run in `out_dir` from its latest checkpoint.
    `dataset_hook(ds) -> ds` transforms the image stream after positioning (tests use it
    to inject NaNs; also usable for custom augmentation).
    """
    if strategy not in STRATEGIES:
        raise ConfigError(f"strategy: unknown {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    # MultiWorkerMirroredStrategy must exist before any other TF op runs in the process.
    dist = make_strategy(strategy)

    import tensorflow as tf

    from .data.pipeline import make_dataset
    from .data.shards import read_dataset_info
    from .models import build_gan, make_optimizers
    from .precision import resolve_policy, set_policy

    out = Path(out_dir)
    if out.resolve() == Path(data_dir).resolve():
        raise ConfigError(f"{out}: --out is the shards directory (--data); give the run its own directory")
    cfg = with_train_defaults(cfg)
    tcfg = cfg["train"]
    weak = _weak_labels(cfg["model"], data_dir)  # before the resume check: sets n_classes
    weak_group = _weak_group(cfg["model"], int(tcfg["batch_size"]), int(dist.num_replicas_in_sync),
                             multiworker=strategy == "multiworker")
    is_chief, worker_id = _chief_info(dist)
    # Only the chief owns the run dir; other workers may start after it has written it.
    previous = _check_run_dir(out, resume) if (is_chief or resume) else None
    if previous is not None:
        _check_same_model(cfg, previous["config"], out)
        prev_info = previous["run"]
        if precision not in (None, "auto", prev_info["precision"]):
            raise ConfigError(f"{out / RUN_JSON}: run was trained with precision "
                              f"{prev_info['precision']}, cannot resume as {precision}")
        precision = prev_info["precision"]
        if seed is not None and seed != prev_info["seed"]:
            raise ConfigError(f"{out / RUN_JSON}: run was trained with seed {prev_info['seed']}, "
                              f"cannot resume with seed {seed}")
        seed = prev_info["seed"]
    seed = int(tcfg["seed"] if seed is None else seed)
    tcfg["seed"] = seed
    total_steps = int(tcfg["steps"] if steps is None else steps)
    tcfg["steps"] = total_steps
    # Explicit values win (0 too, which is then refused below) and are stored in the
    # run's config.toml, so a resumed run keeps them.
    sample_every = int(tcfg["sample_every"] if sample_every is None else sample_every)
    checkpoint_every = int(tcfg["checkpoint_every"] if checkpoint_every is None else checkpoint_every)
    log_every = int(tcfg["log_every"] if log_every is None else log_every)
    tcfg.update(sample_every=sample_every, checkpoint_every=checkpoint_every, log_every=log_every)
    for name, value in (("steps", total_steps), ("sample_every", sample_every),
                        ("checkpoint_every", checkpoint_every), ("log_every", log_every),
                        ("batch_size", tcfg["batch_size"])):
        if int(value) <= 0:
            raise ConfigError(f"train.{name} must be positive, got {value}")

    info = read_dataset_info(data_dir)
    image_size = int(cfg["model"].get("image_size", 0))
    if int(info["crop_size"]) != image_size:
        raise ConfigError(
            f"model.image_size is {image_size} but {Path(data_dir) / 'dataset.json'} holds "
            f"{info['crop_size']}x{info['crop_size']} crops; pass --image-size "
            f"{info['crop_size']} (or re-run prepare with the crop size you want)")

    policy = set_policy(resolve_policy(precision or tcfg["precision"]))
    keras.utils.set_random_seed(seed)

    with dist.scope():
        gan = build_gan(cfg["model"], seed=seed)
        g_opt, d_opt = make_optimizers(tcfg)
        h_opt = _head_optimizer(gan, tcfg)
        gan.compile(g_optimizer=g_opt, d_optimizer=d_opt, head_optimizer=h_opt)
        if strategy == "multiworker":
            _vector_metrics(gan)
        _build_networks(gan)
        _attach_weight_average(gan, tcfg)
        step_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        ckpt = _make_checkpoint(gan, step_var, optimizers=_optimizers(gan, g_opt, d_opt, h_opt))

    ckpt_dir = out / CHECKPOINT_DIR
    if is_chief:
        manager_dir = ckpt_dir
    else:
        # TF's multi-worker recipe: every worker takes part in saving (variables may need
        # collectives to read), but only the chief's files are kept.
        manager_dir = Path(tempfile.mkdtemp(prefix=f"cytogan-worker{worker_id}-ckpt-"))
    manager = tf.train.CheckpointManager(ckpt, str(manager_dir),
                                         max_to_keep=int(tcfg["max_checkpoints"]))
    start_step = 0
    if previous is not None:
        latest = tf.train.latest_checkpoint(str(ckpt_dir))
        # A run stopped before its first checkpoint simply starts again from step 0.
        if latest is not None:
            status = ckpt.restore(latest)
            try:
                status.assert_existing_objects_matched()
            except AssertionError as exc:
                raise ConfigError(f"{latest}: checkpoint does not match the model "
                                  f"({_first_line(exc)})") from None
            start_step = int(step_var.numpy())

    run_info = {
        "arch": cfg["model"].get("arch"),
        "precision": policy,
        "seed": seed,
        "strategy": strategy,
        "num_replicas": int(dist.num_replicas_in_sync),
        "data_dir": str(Path(data_dir).resolve()),
        "dataset": info,
        "image_size": image_size,
        "latent_dim": int(gan.latent_dim),
        "steps_target": total_steps,
        "step": start_step,
        "checkpoint": tf.train.latest_checkpoint(str(ckpt_dir)),
        "cytogan_version": __version__,
        "created": previous["run"].get("created") if previous else _now(),
        "updated": _now(),
    }
    if is_chief:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / CONFIG_TOML, dump_toml(cfg))
        atomic_write_json(out / RUN_JSON, run_info)

    z_fixed = fixed_sample_z(cfg, seed)
    writer = tf.summary.create_file_writer(str(out / LOGS_DIR / "train")) if is_chief else None
    from .progress import progress_bar

    progress = progress_bar(total=total_steps, initial=start_step, unit="step",
                            desc=f"train {run_info['arch']}", enabled=bool(verbose and is_chief))
    tracker = _RunCallback(
        progress=progress, gan=gan, step_var=step_var, start_step=start_step, manager=manager,
        run_dir=out, run_info=run_info, is_chief=is_chief, z_fixed=z_fixed, writer=writer,
        sample_every=sample_every, checkpoint_every=checkpoint_every, log_every=log_every)

    batch_size = int(tcfg["batch_size"])

    if weak is not None and is_chief:
        atomic_write_json(out / LABELS_JSON, {"kind": weak.kind, "classes": weak.classes})

    def dataset_from(step: int):
        ds = make_dataset(data_dir, batch_size, shuffle=True, augment=bool(tcfg["augment"]),
                          seed=seed, repeat=True, labels=weak, group_size=weak_group)
        ds = ds.skip(step)
        if dataset_hook is not None:
            ds = dataset_hook(ds)
        opts = tf.data.Options()
        # Element-wise sharding: a small shards dir may have fewer files than workers.
        opts.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        return ds.with_options(opts)

    try:
        with stop_on_first_sigint(tracker.request_stop):
            _fit_steps(gan, dataset_from, tracker, start_step, total_steps,
                       int(tcfg["steps_per_epoch"]))
        if tracker.stop_requested:  # Ctrl-C: keep the step reached, then stop as Ctrl-C does
            tracker.save_unless_saved()
            raise KeyboardInterrupt
        tracker.finish()
    except tf.errors.DataLossError as exc:  # a truncated/corrupt shard, met inside tf.data
        from .data.shards import locate_bad_shard
        raise locate_bad_shard(data_dir, exc) from None
    finally:
        progress.close()
        if writer is not None:
            writer.close()
        if not is_chief:
            shutil.rmtree(manager_dir, ignore_errors=True)
    return TrainResult(
        run_dir=out, step=tracker.step, precision=policy, metrics=dict(tracker.last_metrics),
        checkpoint=tracker.last_checkpoint,
        images_per_second=tracker.steps_per_second() * batch_size)


def _fit_steps(gan, dataset_from, tracker, start_step: int, total_steps: int, per_epoch: int):
    """Run fit() from `start_step` to `total_steps` in epochs of `per_epoch` steps, with a
    shorter last epoch, so a resumed run continues the same epoch numbering."""
    remaining = total_steps - start_step
    if remaining <= 0:
        return
    chunk = max(1, min(per_epoch, remaining))
    n_full, rest = divmod(remaining, chunk)
    first_epoch = start_step // chunk
    if n_full:
        gan.fit(dataset_from(start_step), epochs=first_epoch + n_full, initial_epoch=first_epoch,
                steps_per_epoch=chunk, callbacks=[tracker], verbose=0, shuffle=False)
    if rest and not tracker.stop_requested:
        gan.fit(dataset_from(tracker.step), epochs=first_epoch + n_full + 1,
                initial_epoch=first_epoch + n_full, steps_per_epoch=rest,
                callbacks=[tracker], verbose=0, shuffle=False)


def load_run(run_dir, readout: str | None = None, views: str | None = None) -> LoadedRun:
    """Rebuild a run's GAN in float32 and restore its latest checkpoint (no optimizers).

    `readout` and `views` pick another encoder readout or view averaging of the same
    trained networks (neither adds weights, so any choice restores from any run)."""
    import tensorflow as tf

    from .models import build_gan
    from .precision import set_policy

    run_dir = Path(run_dir)
    run_info = read_run_info(run_dir)
    cfg = load_config(run_dir / CONFIG_TOML)
    latest = tf.train.latest_checkpoint(str(run_dir / CHECKPOINT_DIR))
    if latest is None:
        raise DataError(f"{run_dir / CHECKPOINT_DIR}: no checkpoint (has the run saved one yet?)")
    set_policy("float32")
    for key, value in (("readout", readout), ("views", views)):
        if value is not None:
            cfg["model"] = dict(cfg["model"], **{key: value})
    gan = build_gan(cfg["model"])
    _build_networks(gan)
    _attach_weight_average(gan, cfg.get("train", {}))
    step_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    ckpt = _make_checkpoint(gan, step_var, optimizers=None)
    try:
        ckpt.restore(latest).expect_partial().assert_existing_objects_matched()
    except (AssertionError, tf.errors.OpError, ValueError) as exc:
        raise DataError(f"{latest}: cannot restore checkpoint ({_first_line(exc)})") from None
    if gan.weight_average is not None:  # the averaged weights are the run's result
        gan.weight_average.apply()
    return LoadedRun(gan=gan, config=cfg, step=int(step_var.numpy()),
                     dataset_info=run_info.get("dataset", {}), run_dir=run_dir, run_info=run_info)


def read_run_info(run_dir) -> dict:
    path = Path(run_dir) / RUN_JSON
    if not path.is_file():
        raise DataError(f"{path}: missing (not a training run directory)")
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: unreadable run info ({exc})") from None


def make_strategy(name: str):
    """A tf.distribute strategy by name: default, mirrored (local devices), multiworker."""
    import tensorflow as tf

    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        # Without GPUs, mirror over the logical CPU devices (one unless the process split
        # the CPU with tf.config.set_logical_device_configuration).
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        return tf.distribute.MirroredStrategy(devices=devices)
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise ConfigError("strategy multiworker needs the TF_CONFIG environment variable "
                              "(cluster spec and this worker's task)")
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ConfigError(f"strategy: unknown {name!r}; choose one of {', '.join(STRATEGIES)}")


def fixed_sample_z(cfg: Mapping[str, Any], seed: int) -> np.ndarray:
    """The z behind every sample sheet of a run: same seed, same z, comparable sheets."""
    from .latent import sample_latent

    model = cfg["model"]
    n = int(cfg.get("train", {}).get("sample_count", TRAIN_DEFAULTS["sample_count"]))
    return sample_latent(n, int(model["latent_dim"]), seed=seed,
                         distribution=model.get("latent_distribution", "normal"))


def generate_unit(gan, z) -> np.ndarray:
    """Generator output for z as float32 images in [0, 1] (the exported contract)."""
    images = gan.generator(np.asarray(z, dtype=np.float32), training=False)
    images = np.asarray(images, dtype=np.float32)
    return np.clip((images + 1.0) * 0.5, 0.0, 1.0)


# --------------------------------------------------------------------------- internals

class _RunCallback(keras.callbacks.Callback):
    """Per-step bookkeeping: divergence check, step counter, logs, samples, checkpoints."""

    def __init__(self, *, progress, gan, step_var, start_step, manager, run_dir, run_info, is_chief,
                 z_fixed, writer, sample_every, checkpoint_every, log_every):
        super().__init__()
        self.progress = progress
        # Throughput is timed from the end of the first step, so tracing is not counted.
        self._timer: tuple[float, int] | None = None
        self.gan, self.step_var, self.manager = gan, step_var, manager
        self.step = start_step
        self.run_dir, self.run_info, self.is_chief = run_dir, run_info, is_chief
        self.z_fixed, self.writer = z_fixed, writer
        self.sample_every, self.checkpoint_every, self.log_every = sample_every, checkpoint_every, log_every
        self.last_metrics: dict[str, float] = {}
        self.last_checkpoint = manager.latest_checkpoint if is_chief else run_info.get("checkpoint")
        self.last_saved_step = start_step if self.last_checkpoint else None
        self.last_sample_step = None
        self.stop_requested = False
        self.announce_stop = not progress.disable  # a bar is shown: say why it stops

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        metrics = {k: float(np.asarray(v).reshape(-1)[0]) for k, v in (logs or {}).items()
                   if np.size(v) == 1}
        bad = [k for k, v in metrics.items() if not math.isfinite(v)]
        if bad:
            raise self._diverged(f"{bad[0]} = {metrics[bad[0]]}")
        self.last_metrics = metrics
        self.step_var.assign(self.step)
        if self._timer is None:
            self._timer = (time.perf_counter(), self.step)
        self.progress.update(1)
        if self.step % self.log_every == 0:
            self.progress.set_postfix({k: f"{v:.4g}" for k, v in metrics.items()}, refresh=False)
        if self.writer is not None and self.step % self.log_every == 0:
            with self.writer.as_default(step=self.step):
                for k, v in metrics.items():
                    _summary_scalar(k, v, self.step)
        if self.step % self.sample_every == 0:
            self.write_samples()
        if self.step % self.checkpoint_every == 0:
            self.save()
        if self.stop_requested and not self.gan.stop_training:
            self.gan.stop_training = True
            if self.announce_stop:
                self.progress.write(STOP_MESSAGE, file=sys.stderr)  # above the bar, not through it

    def request_stop(self):
        """Called from the SIGINT handler, so it only sets a flag: the step boundary acts."""
        self.stop_requested = True

    def save_unless_saved(self):
        if self.last_saved_step != self.step:
            self.save()

    def steps_per_second(self) -> float:
        if self._timer is None or self.step <= self._timer[1]:
            return 0.0
        return (self.step - self._timer[1]) / max(time.perf_counter() - self._timer[0], 1e-9)

    def finish(self):
        """End of training: a final sample sheet and checkpoint unless just written."""
        if self.last_sample_step != self.step:
            self.write_samples()
        if self.last_saved_step != self.step:
            self.save()
        elif self.is_chief:
            self._write_run_info()

    def save(self):
        bad = _non_finite_weights(self.gan)
        if bad:
            raise self._diverged(f"weight {bad} is not finite")
        import tensorflow as tf

        try:
            path = self.manager.save(checkpoint_number=self.step)
        except tf.errors.OpError as exc:  # a full or read-only disk
            ckpt_dir = Path(self.manager.directory)
            for tmp in ckpt_dir.glob("ckpt-*_temp*"):  # TF's half-written checkpoint
                shutil.rmtree(tmp, ignore_errors=True)
            kept = (f"step {self.last_saved_step} is kept" if self.last_checkpoint
                    else "no checkpoint was saved yet")
            raise DataError(f"{ckpt_dir}: cannot write the step-{self.step} checkpoint "
                            f"({_first_line(exc)}); {kept}") from None
        self.last_saved_step = self.step
        if self.is_chief:
            self.last_checkpoint = path
            self._write_run_info()

    def write_samples(self):
        self.last_sample_step = self.step
        if not self.is_chief:
            return
        from .grids import make_grid, to_uint8, write_png

        average = self.gan.weight_average
        with average.applied() if average is not None else contextlib.nullcontext():
            grid = make_grid(to_uint8(generate_unit(self.gan, self.z_fixed)))
        write_png(self.run_dir / SAMPLES_DIR / f"step_{self.step:06d}.png", grid)
        if self.writer is not None:
            with self.writer.as_default(step=self.step):
                _summary_png("samples", grid, self.step)

    def _write_run_info(self):
        self.run_info.update(step=self.step, checkpoint=self.last_checkpoint,
                             metrics=self.last_metrics, updated=_now())
        atomic_write_json(self.run_dir / RUN_JSON, self.run_info)

    def _diverged(self, what: str) -> TrainingDivergedError:
        self.gan.stop_training = True
        kept = (f"last good checkpoint: step {self.last_saved_step} ({self.last_checkpoint})"
                if self.last_checkpoint else "no checkpoint was saved before it")
        if self.is_chief:
            # run.json keeps the last good step; the divergence is recorded beside it.
            atomic_write_json(self.run_dir / RUN_JSON, {
                **self.run_info, "diverged": {"step": self.step, "reason": what}, "updated": _now()})
        return TrainingDivergedError(f"training diverged at step {self.step}: {what}; {kept}")


# tf.summary.scalar/image live in the tensorboard package, which tensorflow-cpu does not
# install. The two helpers below write the same records with TF core's tf.summary.write
# and the plugin metadata TensorBoard's readers key on, so logs/ opens in TensorBoard.
def _summary_scalar(tag: str, value: float, step: int) -> None:
    import tensorflow as tf
    from tensorflow.core.framework import summary_pb2

    meta = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"),
        data_class=summary_pb2.DATA_CLASS_SCALAR)
    tf.summary.write(tag, tf.constant(value, tf.float32), step=step, metadata=meta)


def _summary_png(tag: str, image: np.ndarray, step: int) -> None:
    """One uint8 [H, W, C] image in the images plugin's layout: [width, height, png]."""
    import tensorflow as tf
    from tensorflow.core.framework import summary_pb2

    png = tf.io.encode_png(image)
    tensor = tf.stack([tf.as_string(image.shape[1]), tf.as_string(image.shape[0]), png])
    meta = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="images"),
        data_class=summary_pb2.DATA_CLASS_BLOB_SEQUENCE)
    tf.summary.write(tag, tensor, step=step, metadata=meta)


def _vector_metrics(gan):
    """Make the model's step return [1]-shaped metrics instead of scalars.

    Keras 3's fit() reduces per-replica logs under MultiWorkerMirroredStrategy with
    strategy.reduce(MEAN, v, axis=0), which fails on scalars (tensorflow/tensorflow#72388).
    On [1]-shaped values it yields the cross-worker mean, so every worker sees the same
    metrics (and detects a NaN at the same step, keeping the collectives in lockstep).
    """
    import tensorflow as tf

    step = gan.train_step

    def train_step(data):
        return {k: tf.reshape(v, [1]) for k, v in step(data).items()}

    gan.train_step = train_step


def _non_finite_weights(gan) -> str | None:
    for net in (gan.generator, gan.discriminator, *gan.extra_networks().values()):
        for v in net.variables:
            if not np.all(np.isfinite(np.asarray(v))):
                return v.path if hasattr(v, "path") else v.name
    return None


def _make_checkpoint(gan, step_var, optimizers):
    import tensorflow as tf

    objects = {
        "step": step_var,
        "generator": gan.generator,
        "discriminator": gan.discriminator,
        # State outside the two networks: the noise seed generator, BEGAN's k_t.
        "extra_state": dict(gan.extra_state()),
    }
    if gan.extra_networks():  # BiGAN's encoder, a contrastive head (absent: old checkpoints)
        objects["networks"] = dict(gan.extra_networks())
    if getattr(gan, "weight_average", None) is not None:  # train.ema_decay > 0
        objects["weight_average"] = gan.weight_average.checkpoint_state()
    if optimizers is not None:
        objects["g_optimizer"], objects["d_optimizer"] = optimizers[:2]
        if optimizers[2] is not None:  # D heads' own optimizer (train.head_lr)
            objects["head_optimizer"] = optimizers[2]
    return tf.train.Checkpoint(**objects)


def _attach_weight_average(gan, tcfg):
    """The moving average of G's and E's weights where `train.ema_decay` asks for one."""
    decay = tcfg.get("ema_decay") or 0.0
    if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 <= decay < 1:
        raise ConfigError(f"train.ema_decay: {decay!r} must be a number in [0, 1) "
                          "(0: export the last step's weights; 0.99: average ~100 steps)")
    if decay > 0:
        gan.average_weights(float(decay))


def _head_optimizer(gan, tcfg):
    """D heads' own Adam where `train.head_lr` asks for one; a rate with no head to
    apply it to is a config error, not a silently ignored setting."""
    from .models import make_head_optimizer

    h_opt = make_head_optimizer(tcfg)
    if h_opt is not None and not gan._d_heads():
        raise ConfigError(f"train.head_lr = {tcfg['head_lr']}: this model has no discriminator "
                          "head to train (set model.ssl, model.weak_labels or "
                          "model.morphology_weight, or --set train.head_lr=0)")
    return h_opt


def _optimizers(gan, g_opt, d_opt, h_opt=None):
    """The optimizers the model actually steps (compile may wrap them for loss scaling)."""
    return (getattr(gan, "g_optimizer", None) or g_opt, getattr(gan, "d_optimizer", None) or d_opt,
            getattr(gan, "head_optimizer", None) or h_opt)


def _build_networks(gan):
    """Create every variable now (so checkpoints map by position) with one dummy forward."""
    size = int(gan.image_size)
    z = np.zeros((1, int(gan.latent_dim)), np.float32)
    images = gan.generator(z, training=False)
    gan.warm_up(images, z)
    if getattr(gan, "encoder", None) is not None:
        gan.encoder(np.zeros((1, size, size, 3), np.float32), training=False)
    heads = gan._d_heads()  # heads on D's pooled features (BaseGAN; none for BEGAN/BiGAN)
    if getattr(gan, "trunk", None) is not None and heads:
        _, pooled = gan.trunk(images, training=False)
        for head in heads.values():
            head(pooled, training=False)


def _weak_labels(model_cfg: dict, data_dir):
    """The shards' weak labels when the model trains with them; stores their class count
    in the config (so it is in the run's config.toml and a resume checks it)."""
    kind = model_cfg.get("weak_labels", "none")
    if kind == "none":
        return None
    from .data.labels import weak_labels

    weak = weak_labels(data_dir, kind)
    given = model_cfg.get("n_classes")
    if given not in (None, 0, weak.n_classes):
        raise ConfigError(f"model.n_classes is {given} but {data_dir} holds {weak.n_classes} "
                          f"{kind}s; drop n_classes (train sets it) or use the shards it came from")
    model_cfg["n_classes"] = weak.n_classes
    return weak


def _weak_group(model_cfg: dict, batch_size: int, replicas: int = 1, multiworker: bool = False):
    """Cells per run of one class in a training batch for the set-level weak-label loss
    (None for the class head): checked here, where the batch size is known. A mirrored
    strategy hands each replica a contiguous slice of the batch, so each slice must hold
    whole runs, at least 2 of them, for the loss to have something to tell apart."""
    from .models.class_head import GROUPED_OBJECTIVES

    objective = model_cfg.get("weak_objective")
    if model_cfg.get("weak_labels", "none") == "none" or objective not in GROUPED_OBJECTIVES:
        return None
    if multiworker:
        # Workers rebatch and auto-shard the stream (policy DATA); that each worker's slice
        # keeps whole runs is not validated, and mixed runs would train on noise: refuse.
        raise ConfigError(f'model.weak_objective "{objective}" is not supported with strategy '
                          "multiworker (whole runs per worker are not guaranteed); use strategy "
                          "default or mirrored")
    from .losses import RUN_GROUP

    group = int(model_cfg.get("weak_group", RUN_GROUP))
    replicas = max(1, replicas)
    per_replica = batch_size // replicas
    if batch_size % replicas or per_replica % group or per_replica // group < 2:
        where = f"train.batch_size ({batch_size})" if replicas == 1 else \
            f"each of {replicas} replicas' {batch_size / replicas:g} cells of train.batch_size ({batch_size})"
        raise ConfigError(f"model.weak_group: {group} cells per run must divide {where} "
                          "into at least 2 runs")
    return group


def with_train_defaults(cfg: Mapping[str, Any]) -> dict:
    """A copy of `cfg` whose [train] has every key this module reads (so --set can
    override them even where the TOML leaves them out)."""
    import copy

    cfg = copy.deepcopy(dict(cfg))
    if "model" not in cfg:
        raise ConfigError("config has no [model] section")
    cfg["train"] = {**TRAIN_DEFAULTS, **cfg.get("train", {})}
    return cfg


def _check_run_dir(out: Path, resume: bool):
    """Refuse to overwrite a run; on resume return its saved config and run info.

    A directory whose run failed before its first checkpoint holds nothing trained, so
    a new run may start there (with other options, after fixing the data)."""
    has_run = (out / RUN_JSON).exists() or (out / CHECKPOINT_DIR).exists()
    if has_run and not resume and not _has_checkpoint(out) and _recorded_step(out) == 0:
        return None
    if not resume:
        if has_run:
            raise ConfigError(f"{out} already holds a training run; pass --resume to continue "
                              f"it or choose another --out")
        return None
    if not has_run:
        raise ConfigError(f"{out}: no training run to resume (no {RUN_JSON})")
    return {"run": read_run_info(out), "config": load_config(out / CONFIG_TOML)}


def _recorded_step(out: Path) -> int | None:
    try:
        return int(json.loads((out / RUN_JSON).read_text()).get("step", 0))
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def _has_checkpoint(out: Path) -> bool:
    ckpt_dir = out / CHECKPOINT_DIR
    return (ckpt_dir / "checkpoint").is_file() or any(ckpt_dir.glob("ckpt-*.index"))


def _check_same_model(cfg, saved, out):
    if saved.get("model") != cfg.get("model"):
        keys = sorted(k for k in set(saved.get("model", {})) | set(cfg["model"])
                      if saved.get("model", {}).get(k) != cfg["model"].get(k))
        raise ConfigError(f"{out / CONFIG_TOML}: resumed run has a different [model] "
                          f"({', '.join('model.' + k for k in keys)} differ)")


def _chief_info(dist) -> tuple[bool, int]:
    resolver = getattr(dist, "cluster_resolver", None)
    task_type = getattr(resolver, "task_type", None)
    task_id = getattr(resolver, "task_id", None) or 0
    if task_type is None or task_type == "chief":
        return True, int(task_id)
    has_chief = "chief" in (resolver.cluster_spec().as_dict() if resolver else {})
    return (task_type == "worker" and task_id == 0 and not has_chief), int(task_id)


def _first_line(exc) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
