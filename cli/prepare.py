"""`cytogan prepare`: segment image sets and write single-cell TFRecord shards."""

from __future__ import annotations

import re

import click


def _parse_shard(ctx, param, value):
    if value is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", value)
    if not m or not 0 <= int(m.group(1)) < int(m.group(2)):
        raise click.BadParameter("expected i/N with 0 <= i < N, e.g. 0/4")
    return int(m.group(1)), int(m.group(2))


@click.command()
@click.argument("source", type=click.Path(file_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Shards directory to write (re-running resumes an unfinished one).")
@click.option("--layout", default="bbbc021", show_default=True,
              help="Image-set layout: bbbc021, examplefly, or a layout TOML path.")
@click.option("--config", "config_name", default=None,
              help="Config (name or TOML path) whose [prepare] section sets the defaults "
                   "[default: the bundled config named like --layout, if any].")
@click.option("--crop-size", type=int, default=None, help="Crop side in pixels [default: 64].")
@click.option("--nucleus-diameter", type=float, default=None, metavar="PX",
              help="Typical nucleus diameter in pixels; every segmentation size follows it "
                   "[default: measured from the images]. Stored in dataset.json.")
@click.option("--workers", type=int, default=1, show_default=True,
              help="Worker processes over images (output is identical for any count).")
@click.option("--scheduler", default=None, metavar="ADDRESS|local",
              help="Run the per-image-set work on Dask (pip install 'cytogan-tf[dask]'): "
                   "'local' starts a LocalCluster of --workers processes; otherwise a "
                   "scheduler address (tcp://host:8786) or scheduler file. Same output bytes.")
@click.option("--shard", "shard", callback=_parse_shard, default=None, metavar="i/N",
              help="Cluster job i of N: make only output shards k with k % N == i. The job that "
                   "finds all shards done writes the cell table and dataset.json.")
@click.option("--shards-count", type=int, default=None, help="Output shards K [default: 8].")
@click.option("--merge-only", is_flag=True,
              help="Only merge finished --shard jobs into the final dataset.")
@click.option("--objects", type=click.Path(dir_okay=False, exists=True), default=None,
              help="CellProfiler object table (ImageNumber, Nuclei_Location_Center_X/Y) "
                   "to use instead of our own nucleus segmentation.")
@click.option("--skip-bad", is_flag=True,
              help="Skip unreadable or inconsistent image sets (listed in the summary and "
                   "dataset.json) instead of stopping.")
@click.option("--mask/--no-mask", default=None,
              help="Mask each crop to its own segmented cell [default: mask].")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the normalisation sample; same seed, same bytes.")
@click.option("--limit", type=int, default=None, help="Only the first N image sets.")
@click.option("--set", "set_options", multiple=True, metavar="KEY=VALUE",
              help="Override any [prepare] key, e.g. --set min_nucleus_area=15 (repeatable).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def prepare(source, out, layout, config_name, crop_size, nucleus_diameter, workers, scheduler,
            shard, shards_count, merge_only, objects, skip_bad, mask, seed, limit, set_options, quiet):
    """Segment cells in the image sets under SOURCE and write TFRecord shards to --out.

    Crops are centred on each nucleus, masked to the cell, stacked DNA/Actin/Tubulin as
    RGB and normalised per plate and channel; crops cut by the image border are dropped.
    """
    import logging

    from cytogan_tf.data.prepare import PrepareOptions, prepare as run_prepare, prepare_section

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    section = prepare_section(config_name, layout, set_options)
    if nucleus_diameter is not None:
        section["nucleus_diameter"] = nucleus_diameter
    options = PrepareOptions.from_config(
        section, crop_size=crop_size, workers=workers, shards_count=shards_count,
        objects=objects, skip_bad=skip_bad, mask=mask, seed=seed, limit=limit,
        scheduler=scheduler, progress=not quiet)
    result = run_prepare(source, out, layout=layout, options=options, shard=shard,
                         merge_only=merge_only)
    click.echo(result.summary())
