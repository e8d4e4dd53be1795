"""`cytogan synth`: write a simulated BBBC021-style plate set (the embedded default data)."""

from __future__ import annotations

import re

import click

from cytogan_tf.errors import ConfigError


def _parse_size(ctx, param, value):
    if value is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*[xX,]\s*(\d+)\s*", value)
    if not match:
        raise click.BadParameter("expected HxW, e.g. 256x256")
    return (int(match.group(1)), int(match.group(2)))


@click.command()
@click.option("--out", "out", required=True, type=click.Path(file_okay=False),
              help="New (or empty) directory to write the plate set to.")
@click.option("--preset", type=click.Choice(["tiny", "demo", "full", "texture"]), default="demo", show_default=True,
              help="Preset from configs/synth.toml (texture: the demo's size with MOAs that differ "
                   "only in texture and shape); the options below override it.")
@click.option("--phenotypes", type=click.Choice(["demo", "texture"]),
              help="MOA phenotype table: demo (size, brightness, texture) or texture (texture and shape only).")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same bytes.")
@click.option("--plates", type=int, help="Number of plates (at least 2; grouped into weeks).")
@click.option("--wells-per-treatment", type=int, help="Replicate wells per compound-concentration.")
@click.option("--sites", type=int, help="Fields of view per well.")
@click.option("--image-size", callback=_parse_size, help="Image size HxW in pixels, e.g. 256x256.")
@click.option("--cells-per-image", type=int, help="Mean number of cells per field (before toxicity).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def synth(out, preset, phenotypes, seed, plates, wells_per_treatment, sites, image_size, cells_per_image, quiet):
    """Simulate MCF7-like cells under drugs of known MOA, in BBBC021's exact layout."""
    import dataclasses

    from cytogan_tf.data.synthetic import load_preset, simulate_plates

    settings = load_preset(preset)
    overrides = {"seed": seed, "phenotypes": phenotypes, "plates": plates, "wells_per_treatment": wells_per_treatment,
                 "sites": sites, "image_size": image_size, "cells_per_image": cells_per_image}
    try:
        settings = dataclasses.replace(settings, **{k: v for k, v in overrides.items() if v is not None})
    except TypeError as exc:  # pragma: no cover - options and fields are kept in step
        raise ConfigError(str(exc)) from None
    summary = simulate_plates(out, settings, progress=not quiet)
    click.echo(
        f"synth: {summary['plates']} plates ({summary['weeks']} weeks), {summary['wells']} wells, "
        f"{summary['images']} images, {summary['cells']} cells, {summary['moas']} MOAs + DMSO, "
        f"{summary['compounds']} compounds -> {summary['out']}"
    )
