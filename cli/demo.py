"""`cytogan demo`: synth -> prepare -> train -> export -> profile -> evaluate in one go."""

from __future__ import annotations

import click


@click.command()
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="cytogan-demo",
              show_default=True, help="Directory for plates, shards, run, exports and tables; "
                                      "re-running continues an interrupted demo.")
@click.option("--arch", type=click.Choice(["dcgan", "lsgan", "wgan", "began", "bigan"]), default=None,
              help="GAN variant (default: demo.arch in configs/demo.toml, lsgan).")
@click.option("--steps", type=click.IntRange(min=1), default=None,
              help="Training steps (default: train.steps in configs/demo.toml).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed for the simulated plates, training and sampling.")
@click.option("--set", "set_options", multiple=True, metavar="KEY=VALUE",
              help="Override a configs/demo.toml key, e.g. --set model.widths=[64,32,16,8].")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def demo(out_dir, arch, steps, seed, set_options, quiet):
    """Run the whole CytoGAN study on simulated plates (a few minutes on a laptop CPU)."""
    from cytogan_tf.config import parse_set_options
    from cytogan_tf.demo import run_demo

    run_demo(out_dir, arch=arch, seed=seed, steps=steps, overrides=parse_set_options(set_options),
             progress=not quiet, echo=click.echo)
