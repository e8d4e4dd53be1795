"""`cytogan encode | reconstruct`: real cells into the generator's latent space and back."""

from __future__ import annotations

import click

_export = click.argument("export", metavar="EXPORT", type=click.Path(exists=True))
_method = click.option("--method", type=click.Choice(["auto", "signature", "invert"]), default="auto",
                       show_default=True,
                       help="signature: the export's `encode` (BiGAN); invert: optimise z against "
                            "the generator; auto: signature where the export has one.")
_steps = click.option("--steps", type=click.IntRange(min=0), default=300, show_default=True,
                      help="Adam steps of the inversion (per batch of cells).")
_seed = click.option("--seed", type=int, default=0, show_default=True,
                     help="Seed of the inversion's random starts and of the cells picked.")


def _settings(steps, seed):
    from cytogan_tf.latent_cells import InversionSettings

    return InversionSettings(steps=steps, seed=seed)


@click.command()
@_export
@click.option("--data", "data_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="Prepared shards (or raw plates, prepared on the fly with the export's crop size).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Directory for latents.parquet / latents.csv and encode.json.")
@_method
@_steps
@_seed
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True,
              help="Cells encoded (and inverted) together.")
@click.option("--progress/--no-progress", default=True, show_default=True,
              help="Progress bar on stderr.")
def encode(export, data_dir, out_dir, method, steps, seed, batch_size, progress):
    """Write z for every cell, with the Metadata_ columns `cytogan profile` writes.

    EXPORT is an exported generator or encoder (its sibling is found by name and
    version). The table is what `arithmetic --latents` and `sample --condition` read.
    """
    from pathlib import Path

    from cytogan_tf.io_utils import write_table
    from cytogan_tf.latent_cells import LATENTS_STEM, CellEncoder, LatentModels, write_json
    from cytogan_tf.profiling import cell_features, ensure_shards

    models = LatentModels(export)
    cells = CellEncoder(models, method, _settings(steps, seed))
    out = Path(out_dir)
    shards = ensure_shards(data_dir, out, encoder=models, progress=progress)
    table, stats = cell_features(shards, features="encoder", encoder=cells, batch_size=batch_size,
                                 progress=progress)
    out.mkdir(parents=True, exist_ok=True)
    write_table(table, out / LATENTS_STEM)
    used = models.resolve_method(method)
    summary = {"export": {k: str(v) for k, v in models.paths.items()}, "shards": str(Path(shards).resolve()),
               "method": used, "inversion_steps": steps if used == "invert" else None, "seed": seed,
               "n_cells": int(len(table)), "latent_dim": models.latent_dim, **cells.summary(), **stats}
    write_json(out / "encode.json", summary)
    mse = summary.get("reconstruction_mse_mean")
    start = summary.get("start_mse_mean")
    click.echo(f"encoded {len(table)} cells ({used}) -> {out / (LATENTS_STEM + '.parquet')}; "
               f"reconstruction MSE {mse:.5f}" + (f" (from {start:.5f} at the best random start)"
                                                  if start is not None else ""))


@click.command()
@_export
@click.option("--data", "data_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="Prepared shards of real cells.")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False),
              help="PNG to write (real cells above their reconstructions); metrics go beside it as .json.")
@click.option("--n", "n_show", type=click.IntRange(1, 64), default=12, show_default=True,
              help="Cells shown in the figure.")
@click.option("--n-eval", type=click.IntRange(8, 20000), default=256, show_default=True,
              help="Cells reconstructed for the error and Frechet distance.")
@_method
@_steps
@_seed
def reconstruct(export, data_dir, out_path, n_show, n_eval, method, steps, seed):
    """Real cells beside G(E(x)), with pixel error and the Frechet distance on hand-made
    features between the reconstructions and the real cells."""
    from pathlib import Path

    import numpy as np

    from cytogan_tf.evaluation import read_real_images, reconstruction_distances
    from cytogan_tf.grids import write_grid
    from cytogan_tf.latent_cells import LatentModels, write_json

    models = LatentModels(export)
    real = read_real_images(data_dir, n_eval, seed=seed).astype(np.float32) / 255.0
    models.check_images(real)
    settings = _settings(steps, seed)
    z, mse, start = [], [], []
    for i in range(0, len(real), 128):
        zi, mi, si = models.encode(real[i:i + 128], method, settings)
        z.append(zi), mse.append(mi)
        if si is not None:
            start.append(si)
    z, mse = np.concatenate(z), np.concatenate(mse)
    recon = np.concatenate([models.generate(z[i:i + 128]) for i in range(0, len(z), 128)])
    n = min(n_show, len(real))
    grid = write_grid(out_path, np.concatenate([real[:n], recon[:n]]), ncols=n)
    quality = reconstruction_distances(real, recon, seed)
    used = models.resolve_method(method)
    metrics = {"export": {k: str(v) for k, v in models.paths.items()}, "method": used,
               "n_cells": int(len(real)), "pixel_mse_mean": float(mse.mean()),
               "pixel_mse_start_mean": float(np.concatenate(start).mean()) if start else None,
               "fd_handcrafted_real_recon": quality.get("fd_real_fake"),
               "fd_handcrafted_real_real": quality.get("fd_real_real")}
    write_json(Path(out_path).with_suffix(".json"), metrics)
    click.echo(f"{out_path}: {n} real cells (top) and their reconstructions (bottom), "
               f"{grid.shape[1]}x{grid.shape[0]} px")
    click.echo(f"pixel MSE {metrics['pixel_mse_mean']:.5f} over {len(real)} cells ({used})"
               + (f", from {metrics['pixel_mse_start_mean']:.5f} at the best random start" if start else ""))
    if quality:
        click.echo(f"Frechet distance, hand-made features: reconstructions {quality['fd_real_fake']:.2f}, "
                   f"real vs real {quality['fd_real_real']:.2f} (floor)")
