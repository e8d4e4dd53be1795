"""`cytogan profile` (cells -> well and treatment profiles) and `cytogan evaluate`
(MOA prediction from profiles; sample quality of a generator)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import click

FEATURE_SETS = ("encoder", "handcrafted", "both")
NORMALIZATIONS = ("none", "dmso", "robust", "tvn")


@click.command()
@click.option("--encoder", "encoder_dir", type=click.Path(), default=None,
              help="Exported encoder: exported/NAME-encoder/N (or its base path: newest version).")
@click.option("--data", "data_dir", required=True, type=click.Path(),
              help="Prepared shards dir (has dataset.json) or raw BBBC021-layout plates.")
@click.option("--out", "out_dir", required=True, type=click.Path(), help="Output directory for the tables.")
@click.option("--features", type=click.Choice(FEATURE_SETS), default="encoder", show_default=True,
              help="Encoder embeddings, hand-made CellProfiler-like features, or both side by side.")
@click.option("--normalize", type=click.Choice(NORMALIZATIONS), default="none", show_default=True,
              help="Well profiles relative to DMSO: per-plate standardisation (dmso), per-plate "
                   "median centring with the global DMSO MAD (robust), or TVN whitening.")
@click.option("--tvn-scope", type=click.Choice(("plate", "global")), default="global", show_default=True,
              help="TVN fitted per plate or on all DMSO cells (global: a plate rarely has enough DMSO cells to whiten many features).")
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True,
              help="Cells per encoder call (lower it if memory is short).")
@click.option("--layout", default="bbbc021", show_default=True,
              help="Layout of raw plates (bbbc021 or a layout TOML); ignored for shards.")
@click.option("--crop-size", type=click.IntRange(min=8), default=None,
              help="Crop size when preparing raw plates without an encoder (default 64).")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Processes for hand-made features and on-the-fly preparation.")
@click.option("--scheduler", default=None, metavar="ADDRESS|local",
              help="Run one task per shard on Dask (pip install 'cytogan-tf[dask]'): 'local' "
                   "starts a LocalCluster of --workers processes, else a scheduler address or "
                   "file. Workers import TensorFlow and load the encoder; same tables.")
@click.option("--evaluate/--no-evaluate", "run_evaluate", default=False,
              help="Also run `cytogan evaluate` on the result and print the MOA table.")
@click.option("--progress/--no-progress", default=True, show_default=True,
              help="Progress bar on stderr (plain lines when stderr is not a terminal).")
def profile(encoder_dir, data_dir, out_dir, features, normalize, tvn_scope, batch_size, layout,
            crop_size, workers, scheduler, run_evaluate, progress):
    """Embed every cell and write per-cell, per-well and per-treatment profiles.

    Writes cells, wells_{mean,median} and treatments_{mean,median} as .parquet and .csv
    (Metadata_* columns + features), and profile.json. Order: cells -> wells ->
    normalise -> treatments.
    """
    from cytogan_tf.errors import DataError
    from cytogan_tf.profiling import Encoder, ensure_shards, profile_shards

    if features in ("encoder", "both") and not encoder_dir:
        raise DataError(f"--features {features} needs --encoder (or use --features handcrafted)")
    encoder = Encoder(encoder_dir) if encoder_dir else None
    with contextlib.ExitStack() as stack:
        if scheduler:
            from cytogan_tf.cluster import dask_client

            # One cluster for both stages: raw plates are prepared and profiled on the
            # same workers, which start (and import) once.
            scheduler = stack.enter_context(dask_client(scheduler, workers, quiet=not progress))
        shards_dir = ensure_shards(data_dir, out_dir, encoder=encoder, layout=layout,
                                   crop_size=crop_size, workers=workers, progress=progress,
                                   scheduler=scheduler)
        result = profile_shards(shards_dir, out_dir, encoder=encoder, features=features,
                                normalize=normalize, tvn_scope=tvn_scope, batch_size=batch_size,
                                workers=workers, progress=progress, scheduler=scheduler)
    tables = result["tables"]
    click.echo(f"profiled {result['n_cells']} cells -> {tables['wells_mean']['rows']} wells, "
               f"{tables['treatments_mean']['rows']} treatments, "
               f"{tables['treatments_mean']['features']} features ({features}, normalize={normalize})")
    if "cells_per_s" in result:
        click.echo(f"embedding: {result['cells_per_s']:.0f} cells/s")
    click.echo(f"tables in {out_dir}")
    if run_evaluate:
        from cytogan_tf.evaluation import evaluate_profiles, format_report

        click.echo(format_report(evaluate_profiles(out_dir)))


@click.command()
@click.argument("profiles_dirs", nargs=-1, type=click.Path())
@click.option("--out", "out_dir", type=click.Path(), default=None,
              help="Where to write (default: each profiles dir; several dirs go to OUT/<dir name>).")
@click.option("--aggregation", type=click.Choice(("mean", "median")), default="mean", show_default=True,
              help="Which treatment profiles to evaluate.")
@click.option("--embedding", type=click.Choice(("pca", "tsne")), default="pca", show_default=True,
              help="2-D map of treatment profiles.")
@click.option("--generator", "generator_dir", type=click.Path(), default=None,
              help="Sample quality: exported generator to compare with real cells from --data.")
@click.option("--data", "data_dir", type=click.Path(), default=None, help="Shards of real cells (with --generator).")
@click.option("--encoder", "encoder_dir", type=click.Path(), default=None,
              help="Also measure sample quality on this encoder's embeddings (with --generator).")
@click.option("--n-samples", type=click.IntRange(min=8), default=1000, show_default=True,
              help="Generated and real cells compared by the --generator sample-quality check.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the generated samples and of the 2-D embedding.")
def evaluate(profiles_dirs, out_dir, aggregation, embedding, generator_dir, data_dir, encoder_dir,
             n_samples, seed):
    """MOA prediction (1-NN cosine, NSC and NSCB), mAP and plots for PROFILES_DIRS;
    with --generator, Frechet distance and KID of generated vs real cells."""
    from cytogan_tf.errors import DataError

    if not profiles_dirs and not generator_dir:
        raise DataError("give a profiles directory (from `cytogan profile`) and/or --generator with --data")
    if profiles_dirs:
        from cytogan_tf.evaluation import evaluate_profiles, format_report

        rows = []
        for d in profiles_dirs:
            target = out_dir
            if out_dir is not None and len(profiles_dirs) > 1:
                target = Path(out_dir) / Path(d).name
            metrics = evaluate_profiles(d, target, aggregation=aggregation, embedding=embedding, seed=seed)
            click.echo(f"== {d} ({metrics.get('model') or metrics.get('features')}, "
                       f"normalize={metrics.get('normalize')}, {metrics['n_treatments']} treatments)")
            click.echo(format_report(metrics))
            rows.append((d, metrics))
        if len(rows) > 1:
            # Full paths, however long: the column widens to the longest one.
            width = max(len("profiles"), *(len(str(d)) for d, _ in rows))
            click.echo(f"\n{'profiles':<{width}}    NSC   NSCB    mAP  chance(NSC)")
            for d, m in rows:
                click.echo(f"{str(d):<{width}} {m['nsc']['accuracy']:>6.3f} {m['nscb']['accuracy']:>6.3f} "
                           f"{m['map']:>6.3f} {m['nsc']['chance_prior']:>8.3f}")
    if generator_dir:
        if not data_dir:
            raise DataError("--generator needs --data (shards of real cells)")
        from cytogan_tf.evaluation import generate_images, read_real_images, sample_quality
        from cytogan_tf.io_utils import atomic_write_json
        from cytogan_tf.profiling import Encoder

        real = read_real_images(data_dir, 2 * n_samples, seed=seed)
        fake = generate_images(generator_dir, len(real) // 2, seed=seed)
        encoder = Encoder(encoder_dir) if encoder_dir else None
        quality = sample_quality(real, fake, encoder, seed=seed)
        quality.update(generator=str(generator_dir), data=str(data_dir))
        target = Path(out_dir or ".")
        atomic_write_json(target / "sample_quality.json", quality)
        click.echo(f"sample quality ({quality['n_fake']} generated vs {quality['n_real_half']} real cells):")
        click.echo(f"{'features':<12} {'FD fake':>9} {'FD real':>9} {'KID fake':>9} {'KID real':>9}")
        for space in ("handcrafted", "encoder"):
            if space in quality:
                q = quality[space]
                click.echo(f"{space:<12} {q['fd_real_fake']:>9.3f} {q['fd_real_real']:>9.3f} "
                           f"{q['kid_real_fake']:>9.4f} {q['kid_real_real']:>9.4f}")
        click.echo(f"(real = real-vs-real floor) written to {target / 'sample_quality.json'}")


@click.command()
@click.argument("profile_dirs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output directory for the combined tables.")
@click.option("--normalize", type=click.Choice(NORMALIZATIONS), default="tvn", show_default=True,
              help="Normalisation of each feature set's well profiles (as in `cytogan profile`).")
@click.option("--tvn-scope", type=click.Choice(("plate", "global")), default="global", show_default=True,
              help="TVN fitted per plate or on all DMSO cells.")
@click.option("--evaluate/--no-evaluate", "run_evaluate", default=False,
              help="Also run `cytogan evaluate` on the result and print the MOA table.")
def combine(profile_dirs, out_dir, normalize, tvn_scope, run_evaluate):
    """Profile with two or more feature sets at once (e.g. encoder and hand-made).

    Reads the per-cell tables of PROFILE_DIRS (`cytogan profile` outputs of the same
    cells), normalises each set's well profiles on its own, z-scores every feature,
    weights each set by 1/sqrt(its width) and writes the joint profiles.
    """
    from cytogan_tf.combine import combine_profiles

    result = combine_profiles(profile_dirs, out_dir, normalize=normalize, tvn_scope=tvn_scope)
    t = result["tables"]["treatments_mean"]
    click.echo(f"combined {len(profile_dirs)} feature sets of {result['n_cells']} cells -> "
               f"{t['rows']} treatments, {t['features']} features (normalize={normalize})")
    if run_evaluate:
        from cytogan_tf.evaluation import evaluate_profiles, format_report

        click.echo(format_report(evaluate_profiles(out_dir)))
