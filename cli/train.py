"""`cytogan train`: shards -> run directory (checkpoints, samples, TensorBoard logs)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.option("--arch", type=click.Choice(["wgan", "lsgan", "dcgan", "began", "bigan"]),
              help="Architecture; picks configs/<arch>.toml unless --config is given. "
                   "Optional with --resume (the run's config.toml is used).")
@click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False),
              help="Shards directory written by `cytogan prepare`.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Run directory to create (or continue with --resume).")
@click.option("--config", "config_name", default=None,
              help="Bundled config name or path to a TOML file (default: the --arch config).")
@click.option("--steps", type=int, default=None, help="Total training steps (train.steps).")
@click.option("--batch-size", type=int, default=None, help="Global batch size (train.batch_size).")
@click.option("--image-size", type=int, default=None,
              help="Model image size (model.image_size); must equal the shards' crop size.")
@click.option("--precision", type=click.Choice(["auto", "float32", "mixed_bfloat16", "mixed_float16"]),
              default=None, help="Dtype policy (default: train.precision, usually auto).")
@click.option("--strategy", type=click.Choice(["default", "mirrored", "multiworker"]),
              default="default", show_default=True,
              help="tf.distribute strategy; multiworker reads TF_CONFIG.")
@click.option("--seed", type=int, default=None, help="Seed for weights, noise and data order.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its latest checkpoint.")
@click.option("--sample-every", type=int, default=None, help="Write a sample grid every N steps.")
@click.option("--checkpoint-every", type=int, default=None, help="Save a checkpoint every N steps.")
@click.option("--log-every", type=int, default=None, help="TensorBoard scalars every N steps.")
@click.option("--set", "set_items", multiple=True, metavar="KEY=VALUE",
              help="Override any config key, e.g. --set train.g_lr=1e-4 (repeatable).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train(arch, data_dir, out_dir, config_name, steps, batch_size, image_size, precision,
          strategy, seed, resume, sample_every, checkpoint_every, log_every, set_items, quiet):
    """Train a GAN on prepared shards; Ctrl-C saves the step reached, a crash loses at most one checkpoint interval."""
    from pathlib import Path

    from cytogan_tf.config import apply_overrides, load_config, parse_set_options
    from cytogan_tf.errors import ConfigError
    from cytogan_tf.training import CONFIG_TOML, train as run_training, with_train_defaults

    run_config = Path(out_dir) / CONFIG_TOML
    if resume and config_name is None and not run_config.is_file():
        raise ConfigError(f"{out_dir}: no run to resume there (no {CONFIG_TOML}); "
                          "start a new run with --arch or --config")
    if resume and config_name is None:
        cfg = load_config(run_config)
        if arch is not None and cfg["model"].get("arch") != arch:
            raise ConfigError(f"{run_config}: run is {cfg['model'].get('arch')!r}, not --arch {arch}")
    else:
        if arch is None and config_name is None:
            raise ConfigError("--arch (or --config) is required for a new run")
        cfg = load_config(config_name or arch)
        if "demo" in cfg:  # `--config demo`: exactly what `cytogan demo` trains
            from cytogan_tf.demo import model_config

            cfg = model_config(cfg if arch is None else {**cfg, "demo": {**cfg["demo"], "arch": arch}})
        if arch is not None and cfg.get("model", {}).get("arch") != arch:
            raise ConfigError(f"config {config_name}: model.arch is "
                              f"{cfg.get('model', {}).get('arch')!r}, not --arch {arch}")
    cfg = with_train_defaults(cfg)
    overrides = parse_set_options(set_items)
    if not resume:  # a new run takes the shards' crop size unless told otherwise
        size = image_size or overrides.pop("model.image_size", None) or _crop_size(data_dir)
        cfg["model"]["image_size"] = int(size)
    elif image_size is not None:
        cfg = apply_overrides(cfg, {"model.image_size": image_size})
    cfg = apply_overrides(cfg, {"train.batch_size": batch_size})
    cfg = apply_overrides(cfg, overrides)
    try:
        result = run_training(
            cfg, data_dir, out_dir, steps=steps, resume=resume, precision=precision,
            strategy=strategy, seed=seed, sample_every=sample_every,
            checkpoint_every=checkpoint_every, log_every=log_every, verbose=0 if quiet else 1)
    except KeyboardInterrupt:
        raise click.ClickException(_interrupted(out_dir, data_dir)) from None
    # The first step of a session traces the graph and is not timed: one step gives no rate.
    speed = (f"{result.images_per_second:.1f} img/s" if result.images_per_second > 0
             else "too few steps to time")
    click.echo(f"step {result.step} ({result.precision}, {speed}); checkpoint {result.checkpoint}",
               err=True)
    click.echo(str(result.run_dir))


def _interrupted(out_dir, data_dir) -> str:
    """What Ctrl-C kept, and the command that continues from it."""
    import shlex

    import tensorflow as tf

    latest = tf.train.latest_checkpoint(str(Path(out_dir) / "checkpoints"))
    again = f"cytogan train --data {shlex.quote(str(data_dir))} --out {shlex.quote(str(out_dir))} --resume"
    if latest is None:
        return f"interrupted before the first checkpoint; nothing to resume in {out_dir} (start again)"
    step = latest.rsplit("-", 1)[-1]
    return f"interrupted; the checkpoint of step {step} is kept ({latest}); continue with: {again}"


def _crop_size(data_dir):
    from cytogan_tf.data.shards import read_dataset_info

    return int(read_dataset_info(data_dir)["crop_size"])
